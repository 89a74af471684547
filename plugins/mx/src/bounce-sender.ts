import { findListedDomain, normalizeDomain, type RecipientResult } from "@mailroom/core";
import { buildBounce } from "./bounce.js";
import { retryDelay } from "./options.js";
import type { SchedulerEnv } from "./scheduler.js";
import { contextOf, type QueueRecord } from "./store.js";

/**
 * Writes a claimed record back, or removes it when nothing is left to
 * deliver or report. The scheduler's version keeps a record whose write
 * failed and tries again at each scan.
 */
export type SettleRecord = (record: QueueRecord) => Promise<void>;

/** The result of handing over one bounce: done (sent or dropped on purpose), or to be tried again. */
type Outcome = { kind: "done" } | { kind: "retry"; error: unknown };

const DONE: Outcome = { kind: "done" };

/**
 * Sends one bounce for the failed recipients of the records of one message,
 * claiming them first, then clears those recipients, or keeps them for a
 * later try when the engine could not take the bounce. A bounce that is not
 * handed over within maxQueueLifetime of its first attempt is dropped with an
 * error log line. Returns a time to try again when the records could not be
 * claimed: their files are unchanged then, so nothing on disk records the retry.
 */
export async function sendBounce(env: SchedulerEnv, candidates: QueueRecord[], settleRecord: SettleRecord): Promise<number | undefined> {
  const { store, logger, clock, options } = env;
  const records: QueueRecord[] = [];
  try {
    for (const candidate of candidates) {
      const record = await store.claim(candidate.id);
      if (record) records.push(record);
    }
  } catch (error) {
    const retryAt = clock.now() + retryDelay(options.retry, 1);
    logger.error(
      { err: error, message: candidates[0]!.messageId, records: candidates.map((record) => record.id), retryAt },
      "queue records of a bounce could not be claimed; trying again later",
    );
    for (const record of records) await putBack(env, record, settleRecord);
    return retryAt;
  }
  if (records.length === 0) return undefined;
  const outcome = await handOver(env, records);
  if (outcome.kind === "retry") scheduleRetry(env, records, outcome.error);
  else clearBounce(records);
  for (const record of records) await settleRecord(record);
  return undefined;
}

/** Puts a record back in active/ unchanged, or through `settleRecord` when the rename fails. */
async function putBack(env: SchedulerEnv, record: QueueRecord, settleRecord: SettleRecord): Promise<void> {
  try {
    await env.store.unclaim(record.id);
  } catch (error) {
    env.logger.error({ err: error, id: record.id }, "queue record not put back in active/; writing it anew");
    await settleRecord(record);
  }
}

/** Marks the failed recipients as reported, so the records keep only what is left to deliver. */
function clearBounce(records: QueueRecord[]): void {
  for (const record of records) {
    record.failed = [];
    delete record.bounceAttemptAt;
    delete record.bounceAttempts;
    delete record.bounceFirstAttemptAt;
  }
}

/**
 * Sets the next bounce attempt by the retry schedule, counted from the
 * bounce's first attempt, or drops the bounce once maxQueueLifetime has
 * passed since then. Records written before the first attempt was kept
 * count from this attempt.
 */
function scheduleRetry(env: SchedulerEnv, records: QueueRecord[], error: unknown): void {
  const { logger, clock, options } = env;
  const now = clock.now();
  const first = records[0]!;
  const firstAttemptAt = Math.min(...records.map((record) => record.bounceFirstAttemptAt ?? now));
  const attempts = Math.max(...records.map((record) => record.bounceAttempts ?? 0)) + 1;
  const expires = firstAttemptAt + options.maxQueueLifetime;
  if (now >= expires) {
    logger.error(
      {
        err: error,
        message: first.messageId,
        records: records.map((record) => record.id),
        to: first.sender,
        recipients: records.flatMap((record) => record.failed.map((item) => item.recipient)),
        attempts,
      },
      "bounce not handed over within maxQueueLifetime; dropped",
    );
    clearBounce(records);
    return;
  }
  const retryAt = Math.min(now + retryDelay(options.retry, attempts), expires);
  logger.warn({ err: error, message: first.messageId, attempts, retryAt }, "bounce not handed over; trying again later");
  for (const record of records) {
    record.bounceAttemptAt = retryAt;
    record.bounceAttempts = attempts;
    record.bounceFirstAttemptAt = firstAttemptAt;
  }
}

/** Builds the bounce of the claimed records and hands it to the engine or to this queue. */
async function handOver(env: SchedulerEnv, records: QueueRecord[]): Promise<Outcome> {
  const { store, logger, clock } = env;
  const first = records[0]!;
  const failed = records.flatMap((record) => record.failed);

  if (first.sender === "") {
    logger.warn(
      { message: first.messageId, recipients: failed.map((item) => `${item.recipient} ${item.enhanced}`) },
      "delivery failed for a message from the null sender; no bounce is sent",
    );
    return DONE;
  }

  const hooks = env.hooks();
  const context = { ...contextOf(first), recipients: failed.map((item) => item.recipient) };
  const results: RecipientResult[] = failed.map((item) => ({ ...item }));
  if (hooks) {
    const outcome = await hooks.run("bounce", { message: context, results }, logger);
    if (outcome.kind === "answer") {
      logger.info({ message: first.messageId, plugin: outcome.plugin }, "bounce suppressed by a plugin");
      return DONE;
    }
  }

  const injector = env.injector();
  try {
    const content = buildBounce({
      sender: first.sender,
      hostname: env.hostname,
      arrivalDate: new Date(first.createdAt),
      now: new Date(clock.now()),
      failed,
      headers: await store.readHeaders(first.id),
    });
    const written = first.sender.slice(first.sender.lastIndexOf("@") + 1);
    const senderDomain = normalizeDomain(written) ?? written.toLowerCase();
    if ((await isLocalDomain(env, senderDomain)) === false) {
      // A remote sender's bounce goes straight into this queue: the engine's
      // rcpt policy (plugin-relay) may not let a local injection relay.
      const queued = await store.add([Buffer.from(content)], {
        sender: "",
        domains: new Map([[senderDomain, [first.sender]]]),
        now: clock.now(),
      });
      logger.info({ message: first.messageId, to: first.sender, bounce: queued.records[0]!.id }, "bounce queued for outbound delivery");
      return DONE;
    }
    if (!injector) throw new Error("the server offers no message injector");
    const outcome = await injector.inject({ sender: "", recipients: [first.sender], content }, logger);
    if (outcome.stored) {
      logger.info({ message: first.messageId, to: first.sender, recipients: failed.length }, "bounce sent");
      return DONE;
    }
    const refusal = outcome.refused[0] ?? outcome;
    if (refusal.code >= 500) {
      logger.error({ message: first.messageId, to: first.sender, code: refusal.code, reason: refusal.message }, "bounce refused; dropped");
      return DONE;
    }
    throw new Error(`${refusal.code} ${refusal.message}`);
  } catch (error) {
    return { kind: "retry", error };
  }
}

/**
 * Tells whether `domain` (normalized) is local by the UserDirectory service; undefined
 * when no directory is registered or it fails (then the engine decides).
 */
async function isLocalDomain(env: SchedulerEnv, domain: string): Promise<boolean | undefined> {
  const directory = env.directory();
  if (!directory) return undefined;
  try {
    return (await findListedDomain(directory, domain)) !== undefined;
  } catch (error) {
    env.logger.warn({ err: error, domain }, "UserDirectory failed; the bounce goes through the engine");
    return undefined;
  }
}
