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
import { describeDuration } from "./bounce.js";
import { deliverRun, type DeliveryResult, type Job, type JobSource } from "./deliver.js";
import { retryDelay, type MxOptions } from "./options.js";
import { route } from "./routing.js";
import { contextOf, type AddedMessage, type FailedRecipient, type QueueRecord, type QueueStore } from "./store.js";

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


/** A record this process claimed and will deliver. */
interface Entry {
  record: QueueRecord;
  /** The stored copy when it is kept in memory; otherwise it is read from the queue file. */
  content?: Buffer;
  /** When the entry joined the domain's ready list (performance.now(), milliseconds). */
  readySince?: number;
}

/** Bytes of stored copies kept in memory for delivery, over all queued records. */
const CONTENT_CACHE_LIMIT = 64 * 1024 * 1024;
/**
 * How long an open connection waits for another message to its domain
 * before QUIT. It is short, so an idle connection occupies a slot of the
 * remote server and of the concurrency limits only briefly.
 */
const CONNECTION_IDLE_MS = 2000;
/**
 * How long a record may wait for the busy runs of its domain before another
 * connection opens for it, within concurrency.perDomain and only when
 * concurrency.total has room. A remote that takes seconds per message then
 * gets a second connection, while one that keeps up (records wait
 * milliseconds) keeps one.
 */
const EXTRA_CONNECTION_DELAY_MS = 1000;
/** The reason given when the loop's sleep is cut short, made once so no DOMException is built per wake. */
const WAKE = new Error("queue scan requested");

/**
 * Runs the queue. Records that this process accepts are handed over in
 * memory, already claimed, and their delivery starts at once. A scan of the
 * queue folder picks up records that are due again, records that other
 * processes wrote and changes made through the CLI. Each delivery run keeps
 * one connection to a destination domain open and sends that domain's
 * messages as they arrive, within the concurrency limits. Deferred records
 * are written back with their next attempt time, and one bounce per message
 * reports the recipients that failed.
 */
export class Scheduler {
  /** Claimed records waiting for a delivery run, by destination domain. */
  private readonly ready = new Map<string, Entry[]>();
  /** Runs waiting for another message of their domain. */
  private readonly idle = new Map<string, Set<(entry: Entry | undefined) => void>>();
  private readonly running = new Map<string, number>();
  private total = 0;
  private cachedBytes = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private readonly jobs = new Set<Promise<void>>();
  private bouncing = false;
  /** Claimed records whose new state could not be written (a full disk), written again at each scan. */
  private readonly unreleased = new Map<string, QueueRecord>();
  /** Messages whose bounce could not claim its records, by the time it is tried again. */
  private readonly bounceHolds = new Map<string, number>();
  private scanRequested = true;
  private nextScanAt = 0;
  private sleeping: { until: number; controller: AbortController } | undefined;
  /** Messages with failed recipients whose bounce waits for other records of the message. */
  private readonly bounceWaits = new Set<string>();
  /** Number of jobs that the running runs of each domain may still take. */
  private readonly capacity = new Map<string, number>();
  /**
   * Ids of due records that the last scan left in active/, by domain. They
   * are claimed as the domain's runs take records, so a large backlog drains
   * without a scan of the whole folder for each batch.
   */
  private readonly backlog = new Map<string, string[]>();
  private readonly refilling = new Set<string>();
  /** Timers that check a domain's ready list again once its oldest record has waited EXTRA_CONNECTION_DELAY_MS. */
  private readonly waitChecks = new Map<string, NodeJS.Timeout>();

  constructor(private readonly env: SchedulerEnv) {}

  /** Whether records can be handed over with `accept`. */
  get accepting(): boolean {
    return this.loop !== undefined && !this.stopped;
  }

  /**
   * Writes a claimed record's new state back to the queue, or removes the
   * record when nothing is left to deliver or report. When that fails, the
   * record stays claimed by this process and each scan tries again, so it
   * is not stuck until a restart once the disk has space again.
   */
  private async releaseOrKeep(record: QueueRecord): Promise<void> {
    try {
      if (record.pending.length === 0 && record.failed.length === 0) await this.env.store.finish(record.id);
      else await this.env.store.release(record);
      this.unreleased.delete(record.id);
    } catch (error) {
      this.env.logger.error({ err: error, id: record.id }, "queue record state not written, retrying at the next scan");
      this.unreleased.set(record.id, record);
    }
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Makes the loop scan the queue folder now (a CLI retry, a queued bounce). */
  kick(): void {
    this.scanRequested = true;
    this.sleeping?.controller.abort(WAKE);
  }

  /** Makes the loop scan no later than `at`. */
  private scanBy(at: number): void {
    if (at >= this.nextScanAt) return;
    this.nextScanAt = at;
    if (this.sleeping && at < this.sleeping.until) this.sleeping.controller.abort(WAKE);
  }

  /**
   * Takes over records that `store.add` wrote claimed for this process and
   * starts their delivery. After `stop`, they are put back in active/.
   */
  accept(added: AddedMessage): void {
    if (!this.accepting) {
      void this.unclaim(added.records);
      return;
    }
    let content = added.content;
    if (content && this.cachedBytes + content.length * added.records.length > CONTENT_CACHE_LIMIT) content = undefined;
    for (const record of added.records) {
      if (content) this.cachedBytes += content.length;
      this.enqueue(content ? { record, content } : { record });
    }
  }

  private async unclaimWaiting(): Promise<void> {
    const waiting = [...this.ready.values()].flat().map((entry) => entry.record);
    this.ready.clear();
    await this.unclaim(waiting);
  }

  /** Puts claimed records that no run took back in active/, for this or another process. */
  private async unclaim(records: QueueRecord[]): Promise<void> {
    for (const record of records) {
      try {
        await this.env.store.unclaim(record.id);
      } catch (error) {
        this.env.logger.error({ err: error, id: record.id }, "queue record not put back in active/, so the next start takes it back");
      }
    }
  }

  /**
   * Stops the loop and waits up to `graceMs` for running deliveries. A record
   * still claimed after that is taken back by the next start, so its message
   * may be delivered twice but is never lost.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopped = true;
    for (const timer of this.waitChecks.values()) clearTimeout(timer);
    this.waitChecks.clear();
    this.kick();
    for (const waiters of this.idle.values()) for (const resolve of [...waiters]) resolve(undefined);
    await this.loop;
    await this.unclaimWaiting();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([Promise.all([...this.jobs]), grace]);
    clearTimeout(timer);
    // A run whose connection closed while it waited gave its record back meanwhile.
    await this.unclaimWaiting();
    if (this.jobs.size > 0) {
      this.env.logger.warn({ running: this.jobs.size }, "stopped with deliveries still running");
    }
  }

  private async run(): Promise<void> {
    const { clock, logger, options } = this.env;
    while (!this.stopped) {
      if (this.scanRequested || clock.now() >= this.nextScanAt) {
        this.scanRequested = false;
        this.nextScanAt = Infinity;
        const started = clock.now();
        let wait: number = options.pollInterval;
        try {
          wait = Math.min(wait, await this.tick());
        } catch (error) {
          logger.error({ err: error }, "queue scan failed");
        }
        // A deferral during the scan may have set an earlier time.
        this.nextScanAt = Math.min(this.nextScanAt, started + wait);
      }
      if (this.stopped || this.scanRequested) continue;
      const controller = new AbortController();
      this.sleeping = { until: this.nextScanAt, controller };
      await clock.sleep(Math.max(this.nextScanAt - clock.now(), 0), controller.signal);
      this.sleeping = undefined;
    }
  }

  /** Claims what is due and returns the time until the next record or bounce is due. */
  private async tick(): Promise<number> {
    const { store, clock, logger } = this.env;
    for (const record of [...this.unreleased.values()]) await this.releaseOrKeep(record);
    // A process that ended while it held records (a killed `mailroom queue
    // retry`, a worker) left them in claimed/; a start would take them back too.
    try {
      await store.takeBackAbandoned();
    } catch (error) {
      logger.error({ err: error }, "taking back queue records of ended processes failed; the next scan tries again");
    }
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

    this.backlog.clear();
    for (const [domain, list] of due) {
      list.sort((a, b) => a.nextAttemptAt - b.nextAttemptAt);
      this.backlog.set(domain, list.map((record) => record.id));
    }
    for (const domain of [...this.backlog.keys()]) await this.refill(domain);

    if (!this.bouncing) {
      const bounceWait = await this.bounces(records, due, now);
      next = Math.min(next, bounceWait);
    }
    return next;
  }

  /**
   * Claims records of the domain from the backlog until enough wait for its
   * runs: one batch for each connection the domain may open.
   */
  private async refill(domain: string): Promise<void> {
    const { options, store } = this.env;
    const limit = options.concurrency.perDomain * options.maxMessagesPerConnection;
    if (this.refilling.has(domain)) return;
    this.refilling.add(domain);
    try {
      const ids = this.backlog.get(domain);
      while (ids && ids.length > 0 && !this.stopped && (this.ready.get(domain)?.length ?? 0) < limit) {
        const record = await store.claim(ids.shift()!);
        if (record && record.pending.length > 0) this.enqueue({ record });
        else if (record) await this.releaseOrKeep(record);
      }
      if (ids?.length === 0 && this.backlog.get(domain) === ids) this.backlog.delete(domain);
    } finally {
      this.refilling.delete(domain);
    }
  }

  /** Starts a refill of the domain's backlog without waiting for it. */
  private refillLater(domain: string): void {
    if (!this.backlog.has(domain) || this.refilling.has(domain)) return;
    this.refill(domain).catch((error: unknown) => this.env.logger.error({ err: error, domain }, "claiming due queue records failed; the next scan tries again"));
  }

  /** Hands a claimed record to a run of its domain that waits for one, or queues it and starts runs. */
  private enqueue(entry: Entry): void {
    const domain = entry.record.domain;
    const waiters = this.idle.get(domain);
    const [waiter] = waiters ?? [];
    if (waiter) {
      waiters!.delete(waiter);
      waiter(entry);
      return;
    }
    this.addReady(domain, entry, "back");
    this.pump(domain);
  }

  /** Puts an entry on the domain's ready list, at its back or (for an entry given back) its front. */
  private addReady(domain: string, entry: Entry, end: "front" | "back"): void {
    entry.readySince = performance.now();
    const queue = this.ready.get(domain);
    if (!queue) this.ready.set(domain, [entry]);
    else if (end === "back") queue.push(entry);
    else queue.unshift(entry);
  }

  /**
   * Starts runs for the domain's queued records within the concurrency
   * limits. Another connection opens when the running runs of the domain
   * will not take every record, or when the oldest record has waited
   * EXTRA_CONNECTION_DELAY_MS for them. Only the first rule ends an idle
   * run of another domain when concurrency.total is reached.
   */
  private pump(domain: string): void {
    const { options } = this.env;
    const queue = this.ready.get(domain);
    while (!this.stopped && queue && queue.length > 0 && (this.running.get(domain) ?? 0) < options.concurrency.perDomain) {
      const overflow = queue.length > (this.capacity.get(domain) ?? 0);
      const waited = performance.now() - (queue[0]!.readySince ?? 0);
      if (!overflow && waited < EXTRA_CONNECTION_DELAY_MS) {
        this.checkWaitingLater(domain, EXTRA_CONNECTION_DELAY_MS - waited);
        break;
      }
      if (this.total >= options.concurrency.total) {
        if (overflow) this.endOneIdleRun();
        return;
      }
      const first = queue.shift()!;
      this.spawn(domain, () => this.attempt(domain, first));
    }
    if (queue?.length === 0) this.ready.delete(domain);
  }

  /** Runs pump for the domain after `delay` milliseconds, unless a check is already set. */
  private checkWaitingLater(domain: string, delay: number): void {
    if (this.waitChecks.has(domain)) return;
    const timer = setTimeout(() => {
      this.waitChecks.delete(domain);
      this.pump(domain);
    }, Math.ceil(delay));
    timer.unref();
    this.waitChecks.set(domain, timer);
  }

  /** Ends a run that waits for more messages, so a domain kept out by the total limit gets its connection. */
  private endOneIdleRun(): void {
    for (const waiters of this.idle.values()) {
      const [waiter] = waiters;
      if (!waiter) continue;
      waiters.delete(waiter);
      waiter(undefined);
      return;
    }
  }

  /** Waits up to CONNECTION_IDLE_MS for another record of the domain; undefined when none came. */
  private waitForEntry(domain: string): Promise<Entry | undefined> {
    if (this.stopped) return Promise.resolve(undefined);
    // A domain kept out by the total limit goes first.
    const starved = [...this.ready.entries()].some(([other, queue]) => other !== domain && queue.length > 0);
    if (starved && this.total >= this.env.options.concurrency.total) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      let waiters = this.idle.get(domain);
      if (!waiters) {
        waiters = new Set();
        this.idle.set(domain, waiters);
      }
      const done = (entry: Entry | undefined) => {
        clearTimeout(timer);
        waiters!.delete(done);
        if (waiters!.size === 0 && this.idle.get(domain) === waiters) this.idle.delete(domain);
        resolve(entry);
      };
      const timer = setTimeout(() => done(undefined), CONNECTION_IDLE_MS);
      timer.unref();
      waiters.add(done);
    });
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
        for (const waiting of [...this.ready.keys()]) this.pump(waiting);
        this.refillLater(domain);
      });
    this.jobs.add(job);
  }

  /** Returns the job for a record, with its message from memory or from its queue file. */
  private async jobOf(entry: Entry): Promise<Job> {
    const { record } = entry;
    return {
      id: record.id,
      sender: record.sender,
      recipients: record.pending,
      message: entry.content ?? (await this.env.store.messageOf(record.id)),
      utf8Headers: record.utf8Headers === true,
      eightBit: record.eightBit === true,
      body8BitMime: record.body8BitMime === true,
    };
  }

  /**
   * Runs one delivery for a domain: routes it, then sends `first` and the
   * domain's records that arrive meanwhile, up to maxMessagesPerConnection.
   */
  private async attempt(domain: string, first: Entry): Promise<void> {
    const { options, logger } = this.env;
    const limit = options.maxMessagesPerConnection;
    // Records this run took and has no result for yet.
    const runEntries = new Map<string, Entry>([[first.record.id, first]]);
    const applying: Promise<void>[] = [];
    let jobsTaken = 1;
    let takingJobs = true;
    this.addCapacity(domain, limit - 1);
    const take = (entry: Entry) => {
      jobsTaken += 1;
      this.addCapacity(domain, -1);
      runEntries.set(entry.record.id, entry);
      return entry;
    };
    // Once the run takes no more jobs, the domain's new records may start another run.
    const closeIntake = () => {
      if (!takingJobs) return;
      takingJobs = false;
      this.addCapacity(domain, -(limit - jobsTaken));
    };
    const settle = (entry: Entry, results: DeliveryResult[]) => {
      runEntries.delete(entry.record.id);
      if (entry.content) this.cachedBytes -= entry.content.length;
      applying.push(
        this.apply(entry.record, results).catch((error: unknown) =>
          logger.error({ err: error, id: entry.record.id }, "delivery result not recorded"),
        ),
      );
    };
    const takeWaiting = (): Entry[] => {
      const queue = this.ready.get(domain) ?? [];
      const entries = takingJobs ? queue.splice(0, Math.max(limit - jobsTaken, 0)).map(take) : [];
      if (queue.length === 0) this.ready.delete(domain);
      closeIntake();
      return entries;
    };
    const source: JobSource = {
      next: async () => {
        this.refillLater(domain);
        const queue = this.ready.get(domain);
        const entry = takingJobs && jobsTaken < limit && !this.stopped ? (queue?.shift() ?? (await this.waitForEntry(domain))) : undefined;
        if (queue?.length === 0) this.ready.delete(domain);
        if (entry) return this.jobOf(take(entry));
        closeIntake();
        return undefined;
      },
      rest: () => Promise.all(takeWaiting().map((entry) => this.jobOf(entry))),
      putBack: (job) => {
        const entry = runEntries.get(job.id)!;
        runEntries.delete(job.id);
        jobsTaken -= 1;
        if (takingJobs) this.addCapacity(domain, 1);
        this.addReady(domain, entry, "front");
      },
    };

    try {
      const found = await route(domain, contextOf(first.record), {
        options,
        dns: this.env.dns,
        hooks: this.env.hooks,
        logger,
      });
      if (found.kind === "failure") {
        logger.info({ domain, code: found.code, enhanced: found.enhanced, reason: found.message }, "no route");
        for (const entry of [first, ...takeWaiting()]) {
          settle(
            entry,
            entry.record.pending.map((recipient) => ({
              recipient,
              code: found.code,
              enhanced: found.enhanced,
              response: `${found.code} ${found.enhanced} ${found.message}`,
            })),
          );
        }
      } else {
        await deliverRun(
          found.hops,
          await this.jobOf(first),
          source,
          {
            heloName: options.heloName ?? this.env.hostname,
            timeouts: options.timeouts,
            maxRecipientsPerTransaction: options.maxRecipientsPerTransaction,
          },
          (job, hop, address) => this.deliverHook(runEntries.get(job.id)!.record, hop.name, address),
          (job, results) => settle(runEntries.get(job.id)!, results),
        );
      }
    } catch (error) {
      logger.error({ err: error, domain }, "delivery attempt failed");
      for (const entry of [...runEntries.values()]) {
        settle(
          entry,
          entry.record.pending.map((recipient) => ({
            recipient,
            code: 451,
            enhanced: "4.3.0",
            response: `451 4.3.0 local error: ${(error as Error).message}`,
          })),
        );
      }
    }
    closeIntake();
    await Promise.all(applying);
  }

  private addCapacity(domain: string, delta: number): void {
    const value = (this.capacity.get(domain) ?? 0) + delta;
    if (value > 0) this.capacity.set(domain, value);
    else this.capacity.delete(domain);
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
  private async apply(record: QueueRecord, results: DeliveryResult[]): Promise<void> {
    const { clock, options, logger } = this.env;
    const now = clock.now();
    const context = contextOf(record);
    const delivered = results.filter((item) => item.code >= 200 && item.code < 300);
    const failed = results.filter((item) => item.code >= 500 && !item.temporary);
    const deferred = results.filter((item) => !delivered.includes(item) && !failed.includes(item));
    // A recipient without a result is deferred, so it cannot be retried in a tight loop.
    for (const recipient of record.pending) {
      if (results.some((item) => item.recipient === recipient)) continue;
      deferred.push({ recipient, code: 451, enhanced: "4.3.0", response: "451 4.3.0 no result from the delivery attempt" });
    }

    record.attempts += 1;
    record.pending = deferred.map((item) => item.recipient);
    record.failed.push(...failed.map(toFailed));
    if (deferred.length > 0) {
      record.lastError = deferred[0]!.response;
      const expires = record.createdAt + options.maxQueueLifetime;
      if (now >= expires) {
        record.failed.push(
          ...deferred.map((item) => ({
            ...toFailed(item),
            response: `${item.response} (gave up after ${describeDuration(now - record.createdAt)})`,
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

    await this.releaseOrKeep(record);
    // Logged once the record is written back, so a line says what the queue holds.
    for (const [items, message] of [[delivered, "delivered"], [failed, "delivery failed"], [deferred, "delivery deferred"]] as const) {
      for (const item of items) {
        logger.info(
          { id: record.id, recipient: item.recipient, code: item.code, enhanced: item.enhanced, remoteMta: item.remoteMta, response: item.response },
          message,
        );
      }
    }
    // A scan sends the bounce, once no record of the message is being delivered.
    if (record.failed.length > 0 || this.bounceWaits.has(record.messageId)) this.kick();
    else if (record.pending.length > 0) this.scanBy(record.nextAttemptAt);
  }

  /**
   * Sends one bounce per message for the recipients that failed, once none
   * of the message's records is being delivered or due, so the report covers
   * every domain that failed together.
   */
  private async bounces(records: QueueRecord[], due: Map<string, QueueRecord[]>, now: number): Promise<number> {
    const dueIds = new Set([...due.values()].flat().map((record) => record.id));
    // A record id is its message id and an index; records of the oldest format used the record id.
    const busy = new Set((await this.env.store.claimedIds()).flatMap((id) => [id, id.replace(/-\d+$/, "")]));
    for (const id of dueIds) busy.add(records.find((record) => record.id === id)!.messageId);

    const groups = new Map<string, QueueRecord[]>();
    let next = Infinity;
    this.bounceWaits.clear();
    for (const [messageId, until] of this.bounceHolds) if (until <= now) this.bounceHolds.delete(messageId);
    for (const record of records) {
      if (record.failed.length === 0) continue;
      if (busy.has(record.messageId)) {
        this.bounceWaits.add(record.messageId);
        continue;
      }
      const heldUntil = this.bounceHolds.get(record.messageId);
      if (heldUntil !== undefined) {
        next = Math.min(next, heldUntil - now);
        continue;
      }
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
        for (const [messageId, group] of groups) {
          const retryAt = await sendBounce(this.env, group, (record) => this.releaseOrKeep(record));
          if (retryAt !== undefined) this.bounceHolds.set(messageId, retryAt);
        }
      } finally {
        this.bouncing = false;
        // A bounce to a remote sender was queued in active/; the scan also retries bounces kept back.
        this.kick();
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
