import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { link, mkdir, open, readdir, readFile, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { processAlive, type Logger, type OutboundContext } from "@mailroom/core";

/** A recipient that failed for good and waits to be reported in a bounce. */
export interface FailedRecipient {
  recipient: string;
  code: number;
  enhanced: string;
  response: string;
  remoteMta?: string;
}

/** One message for one destination domain, as stored in the queue folder. */
export interface QueueRecord {
  version: 1;
  id: string;
  /** Shared by the records of one message (one per destination domain). */
  messageId: string;
  /** Envelope sender; "" for the null reverse-path. */
  sender: string;
  domain: string;
  /** Recipients still to deliver. */
  pending: string[];
  /** Recipients that failed for good and are not yet in a bounce. */
  failed: FailedRecipient[];
  createdAt: number;
  nextAttemptAt: number;
  attempts: number;
  lastError?: string;
  /** When a bounce that could not be handed over is tried again. */
  bounceAttemptAt?: number;
}

/** Returns what the outbound hooks see of a record. */
export function contextOf(record: QueueRecord): OutboundContext {
  return {
    id: record.id,
    sender: record.sender,
    domain: record.domain,
    recipients: [...record.pending],
    attempts: record.attempts,
  };
}

const RECORD_ID = /^[A-Za-z0-9_-]{1,64}$/;

export function isRecordId(id: string): boolean {
  return RECORD_ID.test(id);
}

function newMessageId(): string {
  return `${Date.now().toString(36)}${randomBytes(6).toString("hex")}`;
}

async function fsyncPath(target: string): Promise<void> {
  const handle = await open(target, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes a new file and fsyncs it. On failure (a full disk) the partial file is removed. */
async function writeDurably(file: string, data: string): Promise<void> {
  const handle = await open(file, "wx", 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await unlink(file).catch(() => undefined);
    throw error;
  }
  await handle.close();
}

function parseRecord(text: string): QueueRecord {
  const value = JSON.parse(text) as QueueRecord;
  const valid =
    value?.version === 1 &&
    typeof value.id === "string" &&
    isRecordId(value.id) &&
    typeof value.sender === "string" &&
    typeof value.domain === "string" &&
    Array.isArray(value.pending) &&
    Array.isArray(value.failed) &&
    typeof value.nextAttemptAt === "number" &&
    typeof value.createdAt === "number" &&
    typeof value.attempts === "number";
  if (!valid) throw new Error("not a queue record");
  value.messageId ??= value.id;
  return value;
}

function isMissing(error: unknown): boolean {
  return (error as { code?: string }).code === "ENOENT";
}

/** Names in claimed/: record id, process id and a token of that process's run. */
const CLAIMED = /^(.+)\.(\d+)\.([0-9a-f]+)\.json$/;
const RUN_TOKEN = randomBytes(6).toString("hex");

/** True when the process that made a claim has ended (a reused pid has another token). */
function claimOwnerGone(pid: number, token: string): boolean {
  if (pid === process.pid) return token !== RUN_TOKEN;
  return !processAlive(pid);
}

/**
 * The on-disk queue. Layout under the queue folder:
 * - `tmp/`: files being written; never read as records;
 * - `active/ID.eml` and `active/ID.json`: a record's message and state; the
 *   JSON file is renamed in last, so a record exists once it is complete;
 * - `claimed/ID.PID.json`: the state of a record a process is delivering;
 * - `corrupt/`: records that could not be read, set aside.
 */
export class QueueStore {
  readonly tmp: string;
  readonly active: string;
  readonly claimed: string;
  readonly corrupt: string;

  constructor(
    readonly dir: string,
    private readonly logger: Logger,
  ) {
    this.tmp = path.join(dir, "tmp");
    this.active = path.join(dir, "active");
    this.claimed = path.join(dir, "claimed");
    this.corrupt = path.join(dir, "corrupt");
  }

  /** Creates the folders and takes back records claimed by processes that are gone. */
  async init(): Promise<void> {
    for (const folder of [this.tmp, this.active, this.claimed, this.corrupt]) {
      await mkdir(folder, { recursive: true });
    }
    for (const name of await readdir(this.claimed)) {
      const match = CLAIMED.exec(name);
      if (!match || !claimOwnerGone(Number(match[2]), match[3]!)) continue;
      const from = path.join(this.claimed, name);
      const to = path.join(this.active, `${match[1]}.json`);
      try {
        await stat(to);
        await unlink(from);
      } catch (error) {
        if (!isMissing(error)) throw error;
        await rename(from, to);
        this.logger.warn({ id: match[1] }, "took back a queue record claimed by a process that ended");
      }
    }
    await fsyncPath(this.active);
    await this.removeOrphans();
  }

  /** Removes message files whose record was never committed (older than an hour). */
  private async removeOrphans(): Promise<void> {
    const names = new Set(await readdir(this.active));
    const claimedIds = new Set((await readdir(this.claimed)).map((name) => name.split(".")[0]));
    const cutoff = Date.now() - 3_600_000;
    for (const name of names) {
      if (!name.endsWith(".eml")) continue;
      const id = name.slice(0, -4);
      if (names.has(`${id}.json`) || claimedIds.has(id)) continue;
      const file = path.join(this.active, name);
      const info = await stat(file).catch(() => undefined);
      if (info && info.mtimeMs < cutoff) {
        await unlink(file).catch(() => undefined);
        this.logger.warn({ id }, "removed a queued message file without a record");
      }
    }
    for (const name of await readdir(this.tmp)) {
      const file = path.join(this.tmp, name);
      const info = await stat(file).catch(() => undefined);
      if (info && info.mtimeMs < cutoff) await unlink(file).catch(() => undefined);
    }
  }

  bodyPath(id: string): string {
    return path.join(this.active, `${id}.eml`);
  }

  /**
   * Stores one message for several destination domains: the message once
   * (hard-linked per record), then each record's state. Returns once every
   * file and the folder are fsync'd.
   */
  async add(
    body: Readable,
    entry: { sender: string; domains: Map<string, string[]>; now: number },
  ): Promise<QueueRecord[]> {
    const messageId = newMessageId();
    const tmpBody = path.join(this.tmp, `${messageId}.eml`);
    const records: QueueRecord[] = [];
    try {
      await pipeline(body, createWriteStream(tmpBody, { flags: "wx", mode: 0o600 }));
      await fsyncPath(tmpBody);
      let index = 0;
      for (const [domain, recipients] of entry.domains) {
        const record: QueueRecord = {
          version: 1,
          id: `${messageId}-${index++}`,
          messageId,
          sender: entry.sender,
          domain,
          pending: recipients,
          failed: [],
          createdAt: entry.now,
          nextAttemptAt: entry.now,
          attempts: 0,
        };
        await link(tmpBody, this.bodyPath(record.id));
        records.push(record);
      }
      for (const record of records) {
        const tmpState = path.join(this.tmp, `${record.id}.json`);
        await writeDurably(tmpState, JSON.stringify(record));
        await rename(tmpState, path.join(this.active, `${record.id}.json`));
      }
      await fsyncPath(this.active);
    } catch (error) {
      for (const record of records) {
        await unlink(path.join(this.active, `${record.id}.json`)).catch(() => undefined);
        await unlink(this.bodyPath(record.id)).catch(() => undefined);
      }
      throw error;
    } finally {
      await unlink(tmpBody).catch(() => undefined);
    }
    return records;
  }

  /** Sets an unreadable record aside in corrupt/ and logs it. */
  private async setAside(file: string, id: string, error: unknown): Promise<void> {
    const target = path.join(this.corrupt, `${id}.${Date.now()}.json`);
    try {
      await rename(file, target);
      await rename(this.bodyPath(id), target.replace(/\.json$/, ".eml")).catch(() => undefined);
      this.logger.error({ id, err: error, movedTo: target }, "unreadable queue record set aside");
    } catch (moveError) {
      if (!isMissing(moveError)) {
        this.logger.error({ id, err: moveError }, "unreadable queue record could not be set aside");
      }
    }
  }

  /** Reads every record not claimed by a process; unreadable ones are set aside. */
  async list(): Promise<QueueRecord[]> {
    const records: QueueRecord[] = [];
    for (const name of await readdir(this.active)) {
      if (!name.endsWith(".json")) continue;
      const id = name.slice(0, -5);
      const file = path.join(this.active, name);
      let text: string;
      try {
        text = await readFile(file, "utf8");
      } catch (error) {
        if (isMissing(error)) continue;
        throw error;
      }
      try {
        records.push(parseRecord(text));
      } catch (error) {
        await this.setAside(file, id, error);
      }
    }
    return records;
  }

  /** Returns the records being delivered right now, by any process. */
  async listClaimed(): Promise<{ id: string; pid: number; record?: QueueRecord }[]> {
    const result: { id: string; pid: number; record?: QueueRecord }[] = [];
    for (const name of await readdir(this.claimed)) {
      const match = CLAIMED.exec(name);
      if (!match) continue;
      const text = await readFile(path.join(this.claimed, name), "utf8").catch(() => undefined);
      let record: QueueRecord | undefined;
      try {
        record = text === undefined ? undefined : parseRecord(text);
      } catch {
        record = undefined;
      }
      result.push({ id: match[1]!, pid: Number(match[2]), ...(record ? { record } : {}) });
    }
    return result;
  }

  private claimedPath(id: string): string {
    return path.join(this.claimed, `${id}.${process.pid}.${RUN_TOKEN}.json`);
  }

  /**
   * Claims a record by renaming its state into claimed/, so no other process
   * (or CLI command) works on it. Returns undefined when it is gone or taken.
   */
  async claim(id: string): Promise<QueueRecord | undefined> {
    if (!isRecordId(id)) return undefined;
    const claimed = this.claimedPath(id);
    try {
      await rename(path.join(this.active, `${id}.json`), claimed);
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    try {
      return parseRecord(await readFile(claimed, "utf8"));
    } catch (error) {
      await this.setAside(claimed, id, error);
      return undefined;
    }
  }

  /** Writes the new state of a claimed record and makes it visible again. */
  async release(record: QueueRecord): Promise<void> {
    const tmpState = path.join(this.tmp, `${record.id}.${randomBytes(4).toString("hex")}.json`);
    await writeDurably(tmpState, JSON.stringify(record));
    await rename(tmpState, path.join(this.active, `${record.id}.json`));
    await fsyncPath(this.active);
    await unlink(this.claimedPath(record.id)).catch(() => undefined);
  }

  /** Removes a claimed record for good (delivered, bounced or deleted). */
  async finish(id: string): Promise<void> {
    await unlink(this.bodyPath(id)).catch((error: unknown) => {
      if (!isMissing(error)) throw error;
    });
    await unlink(this.claimedPath(id)).catch(() => undefined);
    await fsyncPath(this.active);
  }

  /** Reads the header block of a record's message (at most 256 KiB). */
  async readHeaders(id: string): Promise<string> {
    const handle = await open(this.bodyPath(id), "r");
    try {
      const buffer = Buffer.alloc(256 * 1024);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
      const text = buffer.subarray(0, bytesRead).toString("utf8");
      const end = text.indexOf("\r\n\r\n");
      return end === -1 ? text : text.slice(0, end + 2);
    } finally {
      await handle.close();
    }
  }
}
