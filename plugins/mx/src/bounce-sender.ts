import { Readable } from "node:stream";
import type { RecipientResult } from "@mailroom/core";
import { buildBounce } from "./bounce.js";
import { retryDelay } from "./options.js";
import type { SchedulerEnv } from "./scheduler.js";
import { contextOf, type QueueRecord } from "./store.js";

/**
 * Sends one bounce for the failed recipients of the records of one message,
 * claiming them first, then clears those recipients (or keeps them for a
 * later try when the engine could not take the bounce).
 */
export async function sendBounce(env: SchedulerEnv, candidates: QueueRecord[]): Promise<void> {
  const { store, logger, clock, options } = env;
  const records: QueueRecord[] = [];
  for (const candidate of candidates) {
    const record = await store.claim(candidate.id);
    if (record) records.push(record);
  }
  if (records.length === 0) return;
  const first = records[0]!;
  const failed = records.flatMap((record) => record.failed);
  const settle = async (keepFailed: boolean, retryAt?: number) => {
    for (const record of records) {
      if (!keepFailed) record.failed = [];
      if (retryAt !== undefined) record.bounceAttemptAt = retryAt;
      if (record.pending.length === 0 && record.failed.length === 0) await store.finish(record.id);
      else await store.release(record);
    }
  };

  if (first.sender === "") {
    logger.warn(
      { message: first.messageId, recipients: failed.map((item) => `${item.recipient} ${item.enhanced}`) },
      "delivery failed for a message from the null sender; no bounce is sent",
    );
    return settle(false);
  }

  const hooks = env.hooks();
  const context = { ...contextOf(first), recipients: failed.map((item) => item.recipient) };
  const results: RecipientResult[] = failed.map((item) => ({ ...item }));
  if (hooks) {
    const outcome = await hooks.run("bounce", { message: context, results }, logger);
    if (outcome.kind === "answer") {
      logger.info({ message: first.messageId, plugin: outcome.plugin }, "bounce suppressed by a plugin");
      return settle(false);
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
    const senderDomain = first.sender.slice(first.sender.lastIndexOf("@") + 1).toLowerCase();
    if ((await isLocalDomain(env, senderDomain)) === false) {
      // A remote sender's bounce goes straight into this queue: the engine's
      // rcpt policy (plugin-relay) may not let a local injection relay.
      const queued = await store.add(Readable.from([Buffer.from(content)]), {
        sender: "",
        domains: new Map([[senderDomain, [first.sender]]]),
        now: clock.now(),
      });
      logger.info({ message: first.messageId, to: first.sender, bounce: queued.records[0]!.id }, "bounce queued for outbound delivery");
      return settle(false);
    }
    if (!injector) throw new Error("the server offers no message injector");
    const outcome = await injector.inject({ sender: "", recipients: [first.sender], content }, logger);
    if (outcome.stored) {
      logger.info({ message: first.messageId, to: first.sender, recipients: failed.length }, "bounce sent");
      return settle(false);
    }
    const refusal = outcome.refused[0] ?? outcome;
    if (refusal.code >= 500) {
      logger.error({ message: first.messageId, to: first.sender, code: refusal.code, reason: refusal.message }, "bounce refused; dropped");
      return settle(false);
    }
    throw new Error(`${refusal.code} ${refusal.message}`);
  } catch (error) {
    logger.warn({ err: error, message: first.messageId }, "bounce not handed over; trying again later");
    return settle(true, clock.now() + retryDelay(options.retry, 1));
  }
}

/**
 * Tells whether `domain` is local by the UserDirectory service; undefined
 * when no directory is registered or it fails (then the engine decides).
 */
async function isLocalDomain(env: SchedulerEnv, domain: string): Promise<boolean | undefined> {
  const directory = env.directory();
  if (!directory) return undefined;
  try {
    const domains = await directory.domains();
    return domains.map((entry) => entry.toLowerCase()).includes(domain);
  } catch (error) {
    env.logger.warn({ err: error, domain }, "UserDirectory failed; the bounce goes through the engine");
    return undefined;
  }
}
