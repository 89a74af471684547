import type { Clock, OutboundQueue, QueuedMessage } from "@mailroom/core";
import type { QueueRecord, QueueStore } from "./store.js";

function summary(record: QueueRecord, delivering = false): QueuedMessage & { delivering: boolean; failed: number } {
  return {
    id: record.id,
    sender: record.sender,
    domain: record.domain,
    recipients: [...record.pending, ...record.failed.map((item) => item.recipient)],
    attempts: record.attempts,
    createdAt: record.createdAt,
    nextAttemptAt: record.nextAttemptAt,
    ...(record.lastError ? { lastError: record.lastError } : {}),
    delivering,
    failed: record.failed.length,
  };
}

/**
 * A queue entry as listed: the record summary plus whether a process is
 * delivering it. A record left claimed by a process that ended is listed as
 * not delivering, because the next scan or start takes it back.
 */
export type QueueEntry = ReturnType<typeof summary>;

/**
 * The OutboundQueue service over the on-disk store. Every change claims the
 * record first, so it never races a delivery in this or another process.
 */
export class DiskOutboundQueue implements OutboundQueue {
  constructor(
    private readonly store: QueueStore,
    private readonly clock: Clock,
    private readonly onChange: () => void = () => undefined,
    /** Resolves once the store's folders exist; every method waits for it first. */
    private readonly ready: () => Promise<void> = () => Promise.resolve(),
  ) {}

  async list(): Promise<QueueEntry[]> {
    await this.ready();
    const active = (await this.store.list()).map((record) => summary(record));
    const claimed = (await this.store.listClaimed()).flatMap((entry) =>
      entry.record ? [summary(entry.record, !entry.abandoned)] : [],
    );
    return [...active, ...claimed].sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));
  }

  async get(id: string): Promise<QueueEntry | undefined> {
    const record = await this.details(id);
    return record ? summary(record, record.delivering) : undefined;
  }

  /** Full state of a record, with failed recipients; undefined when it does not exist. */
  async details(id: string): Promise<(QueueRecord & { delivering: boolean }) | undefined> {
    await this.ready();
    // A record waiting in active/ is read from its own file, so a large queue is not read whole.
    const active = await this.store.readActive(id);
    if (active) return { ...active, delivering: false };
    const claimed = (await this.store.listClaimed()).find((entry) => entry.id === id);
    return claimed?.record ? { ...claimed.record, delivering: !claimed.abandoned } : undefined;
  }

  async retry(id: string): Promise<boolean> {
    await this.ready();
    const record = await this.store.claim(id);
    if (!record) return false;
    record.nextAttemptAt = this.clock.now();
    delete record.bounceAttemptAt;
    await this.store.release(record);
    this.onChange();
    return true;
  }

  /** Asks the servers that deliver from this queue to scan it now. */
  async requestScan(): Promise<void> {
    await this.ready();
    return this.store.requestScan();
  }

  async remove(id: string): Promise<boolean> {
    await this.ready();
    const record = await this.store.claim(id);
    if (!record) return false;
    await this.store.finish(record.id);
    this.onChange();
    return true;
  }
}
