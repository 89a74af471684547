import type {
  Clock,
  DnsResolver,
  HookService,
  Logger,
  MessageInjector,
  RecipientResult,
  UserDirectory,
} from "@mailroom/core";
import { sendBounce } from "./bounce-sender.js";
import { deliverAll, type Job } from "./deliver.js";
import { retryDelay, type MxOptions } from "./options.js";
import { route } from "./routing.js";
import { contextOf, type FailedRecipient, type QueueRecord, type QueueStore } from "./store.js";

export interface SchedulerEnv {
  store: QueueStore;
  options: MxOptions;
  hostname: string;
  clock: Clock;
  logger: Logger;
  dns: () => DnsResolver;
  hooks: () => HookService | undefined;
  injector: () => MessageInjector | undefined;
  directory: () => UserDirectory | undefined;
}


/**
 * Runs the queue: picks due records, claims them, delivers them grouped by
 * destination domain within the concurrency limits, reschedules what was
 * deferred and sends one bounce per message for what failed.
 */
export class Scheduler {
  private readonly running = new Map<string, number>();
  private total = 0;
  private stopped = false;
  private wake = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly jobs = new Set<Promise<void>>();
  private bouncing = false;
  /** Claimed records whose new state could not be written (a full disk), written again at each scan. */
  private readonly unreleased = new Map<string, QueueRecord>();

  constructor(private readonly env: SchedulerEnv) {}

  /**
   * Writes a claimed record's new state back to the queue. When that fails,
   * the record stays claimed by this process and each scan tries again, so
   * it is not stuck until a restart once the disk has space again.
   */
  private async releaseOrKeep(record: QueueRecord): Promise<void> {
    try {
      await this.env.store.release(record);
      this.unreleased.delete(record.id);
    } catch (error) {
      this.env.logger.error({ err: error, id: record.id }, "queue record state not written, retrying at the next scan");
      this.unreleased.set(record.id, record);
    }
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Makes the loop look at the queue now (new record, finished job, CLI retry). */
  kick(): void {
    this.wake.abort();
  }

  /**
   * Stops the loop and waits up to `graceMs` for running deliveries. A record
   * still claimed after that is taken back by the next start, so its message
   * may be delivered twice but is never lost.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopped = true;
    this.kick();
    await this.loop;
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([Promise.all([...this.jobs]), grace]);
    clearTimeout(timer);
    if (this.jobs.size > 0) {
      this.env.logger.warn({ running: this.jobs.size }, "stopped with deliveries still running");
    }
  }

  private async run(): Promise<void> {
    const { clock, logger, options } = this.env;
    while (!this.stopped) {
      // Absolute times, so time that passes during the scan is not waited twice.
      let wakeAt = clock.now() + options.pollInterval;
      try {
        const started = clock.now();
        wakeAt = Math.min(wakeAt, started + (await this.tick()));
      } catch (error) {
        logger.error({ err: error }, "queue scan failed");
      }
      if (this.stopped) break;
      const signal = this.wake.signal;
      if (!signal.aborted) await clock.sleep(Math.max(wakeAt - clock.now(), 0), signal);
      if (this.wake.signal.aborted) this.wake = new AbortController();
    }
  }

  /** Starts what is due; returns the time until the next record is due. */
  private async tick(): Promise<number> {
    const { store, options, clock } = this.env;
    for (const record of [...this.unreleased.values()]) await this.releaseOrKeep(record);
    const now = clock.now();
    const records = await store.list();
    let next = Infinity;

    const due = new Map<string, QueueRecord[]>();
    for (const record of records) {
      if (record.pending.length === 0) continue;
      if (record.nextAttemptAt > now) {
        next = Math.min(next, record.nextAttemptAt - now);
        continue;
      }
      const list = due.get(record.domain) ?? [];
      list.push(record);
      due.set(record.domain, list);
    }

    for (const [domain, list] of due) {
      list.sort((a, b) => a.nextAttemptAt - b.nextAttemptAt);
      while (
        list.length > 0 &&
        this.total < options.concurrency.total &&
        (this.running.get(domain) ?? 0) < options.concurrency.perDomain
      ) {
        const claimed: QueueRecord[] = [];
        while (list.length > 0 && claimed.length < options.maxMessagesPerConnection) {
          const record = await store.claim(list.shift()!.id);
          if (record && record.pending.length > 0) claimed.push(record);
          else if (record) await this.releaseOrKeep(record);
        }
        if (claimed.length > 0) this.spawn(domain, () => this.attempt(domain, claimed));
      }
    }

    if (!this.bouncing) {
      const bounceWait = await this.bounces(records, due, now);
      next = Math.min(next, bounceWait);
    }
    return next;
  }

  private spawn(domain: string, work: () => Promise<void>): void {
    this.total += 1;
    this.running.set(domain, (this.running.get(domain) ?? 0) + 1);
    const job = work()
      .catch((error: unknown) => this.env.logger.error({ err: error, domain }, "delivery run failed"))
      .finally(() => {
        this.total -= 1;
        const count = (this.running.get(domain) ?? 1) - 1;
        if (count <= 0) this.running.delete(domain);
        else this.running.set(domain, count);
        this.jobs.delete(job);
        this.kick();
      });
    this.jobs.add(job);
  }

  /** One delivery attempt for claimed records of one domain. */
  private async attempt(domain: string, records: QueueRecord[]): Promise<void> {
    const { options, logger, store } = this.env;
    let results: Map<string, RecipientResult[]>;
    try {
      const found = await route(domain, contextOf(records[0]!), {
        options,
        dns: this.env.dns,
        hooks: this.env.hooks,
        logger,
      });
      if (found.kind === "failure") {
        logger.info({ domain, code: found.code, enhanced: found.enhanced, reason: found.message }, "no route");
        results = new Map(
          records.map((record) => [
            record.id,
            record.pending.map((recipient) => ({
              recipient,
              code: found.code,
              enhanced: found.enhanced,
              response: `${found.code} ${found.enhanced} ${found.message}`,
            })),
          ]),
        );
      } else {
        const jobs: Job[] = records.map((record) => ({
          id: record.id,
          sender: record.sender,
          recipients: record.pending,
          bodyPath: store.bodyPath(record.id),
        }));
        const byId = new Map(records.map((record) => [record.id, record]));
        results = await deliverAll(
          found.hops,
          jobs,
          { heloName: options.heloName ?? this.env.hostname, timeouts: options.timeouts },
          (job, hop, address) => this.deliverHook(byId.get(job.id)!, hop.name, address),
        );
      }
    } catch (error) {
      logger.error({ err: error, domain }, "delivery attempt failed");
      results = new Map(
        records.map((record) => [
          record.id,
          record.pending.map((recipient) => ({
            recipient,
            code: 451,
            enhanced: "4.3.0",
            response: `451 4.3.0 local error: ${(error as Error).message}`,
          })),
        ]),
      );
    }
    for (const record of records) {
      await this.apply(record, results.get(record.id) ?? []);
    }
  }

  private async deliverHook(record: QueueRecord, host: string, address: string): Promise<RecipientResult[] | undefined> {
    const hooks = this.env.hooks();
    if (!hooks) return undefined;
    const outcome = await hooks.run("deliver", { message: contextOf(record), host, address }, this.env.logger);
    if (outcome.kind === "cont") return undefined;
    const answer = outcome.kind === "answer" ? outcome.answer : undefined;
    const verdict = answer?.verdict ?? "DENYSOFT";
    const code = answer?.code ?? defaultCode(verdict);
    const enhanced = answer?.enhanced ?? defaultEnhanced(code);
    const text = answer?.message ?? (outcome.kind === "error" ? "deliver hook failed" : "answered by a plugin");
    return record.pending.map((recipient) => ({ recipient, code, enhanced, response: `${code} ${enhanced} ${text}` }));
  }

  /** Records one attempt's results and writes the record back (or removes it). */
  private async apply(record: QueueRecord, results: RecipientResult[]): Promise<void> {
    const { clock, options, logger, store } = this.env;
    const now = clock.now();
    const context = contextOf(record);
    const delivered = results.filter((item) => item.code >= 200 && item.code < 300);
    const failed = results.filter((item) => item.code >= 500);
    const deferred = results.filter((item) => item.code < 200 || (item.code >= 300 && item.code < 500));
    // A recipient without a result is deferred, so it cannot be retried in a tight loop.
    for (const recipient of record.pending) {
      if (results.some((item) => item.recipient === recipient)) continue;
      deferred.push({ recipient, code: 451, enhanced: "4.3.0", response: "451 4.3.0 no result from the delivery attempt" });
    }

    record.attempts += 1;
    record.pending = deferred.map((item) => item.recipient);
    record.failed.push(...failed.map(toFailed));
    for (const item of [...delivered, ...failed, ...deferred]) {
      logger.info(
        { id: record.id, recipient: item.recipient, code: item.code, enhanced: item.enhanced, remoteMta: item.remoteMta, response: item.response },
        resultMessage(item.code),
      );
    }

    if (deferred.length > 0) {
      record.lastError = deferred[0]!.response;
      const expires = record.createdAt + options.maxQueueLifetime;
      if (now >= expires) {
        record.failed.push(
          ...deferred.map((item) => ({
            ...toFailed(item),
            response: `${item.response} (gave up after ${Math.round((now - record.createdAt) / 60_000)} minutes)`,
          })),
        );
        record.pending = [];
      } else {
        record.nextAttemptAt = Math.min(now + retryDelay(options.retry, record.attempts), expires);
      }
    }

    const hooks = this.env.hooks();
    if (hooks && delivered.length) await hooks.runAll("delivered", { message: context, results: delivered }, logger);
    if (hooks && record.pending.length) {
      await hooks.runAll("deferred", { message: context, results: deferred, nextAttemptAt: record.nextAttemptAt }, logger);
    }

    if (record.pending.length === 0 && record.failed.length === 0) await store.finish(record.id);
    else await this.releaseOrKeep(record);
  }

  /**
   * Sends one bounce per message for the recipients that failed, once none
   * of the message's records is being delivered or due, so the report covers
   * every domain that failed together.
   */
  private async bounces(records: QueueRecord[], due: Map<string, QueueRecord[]>, now: number): Promise<number> {
    const dueIds = new Set([...due.values()].flat().map((record) => record.id));
    const claimed = await this.env.store.listClaimed();
    const busy = new Set(claimed.map((entry) => entry.record?.messageId ?? entry.id.replace(/-\d+$/, "")));
    for (const id of dueIds) busy.add(records.find((record) => record.id === id)!.messageId);

    const groups = new Map<string, QueueRecord[]>();
    let next = Infinity;
    for (const record of records) {
      if (record.failed.length === 0 || busy.has(record.messageId)) continue;
      if (record.bounceAttemptAt && record.bounceAttemptAt > now) {
        next = Math.min(next, record.bounceAttemptAt - now);
        continue;
      }
      const group = groups.get(record.messageId) ?? [];
      group.push(record);
      groups.set(record.messageId, group);
    }
    if (groups.size === 0) return next;
    this.bouncing = true;
    this.spawn("", async () => {
      try {
        for (const group of groups.values()) await sendBounce(this.env, group);
      } finally {
        this.bouncing = false;
      }
    });
    return next;
  }
}

function toFailed(item: RecipientResult): FailedRecipient {
  return {
    recipient: item.recipient,
    code: item.code,
    enhanced: item.enhanced,
    response: item.response,
    ...(item.remoteMta ? { remoteMta: item.remoteMta } : {}),
  };
}

/** Returns the reply code for a deliver-hook verdict that set none. */
function defaultCode(verdict: string): number {
  if (verdict === "OK") return 250;
  if (verdict.startsWith("DENYSOFT")) return 451;
  return 550;
}

/** Returns the enhanced status code for a deliver-hook reply that set none. */
function defaultEnhanced(code: number): string {
  if (code < 300) return "2.0.0";
  if (code < 500) return "4.3.0";
  return "5.7.1";
}

/** Returns the log message for one recipient's delivery result. */
function resultMessage(code: number): string {
  if (code >= 200 && code < 300) return "delivered";
  if (code >= 500) return "delivery failed";
  return "delivery deferred";
}
