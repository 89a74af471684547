import type { Message } from "./message/message.js";
import type { HookOutcome, HookRunner, LogTarget } from "./plugins/runner.js";
import type { Connection, Recipient, Transaction } from "./session-state.js";

/** The result of calling the queue hook of every route's owner. */
export type StoreResult =
  | { kind: "stored" }
  /** `route` was not stored: `outcome` is its owner's answer, or undefined when no plugin owns it. */
  | { kind: "failed"; route: string; outcome: HookOutcome | undefined }
  /** The verdict was rejected from outside (the server's shutdown deadline) before every route stored the message. */
  | { kind: "rejected" };

/**
 * The engine's one decision on a message: accepted once every route stored
 * it, or rejected. The queue handlers get it as their `accepted` promise. A
 * failed route rejects it, and so does the server's shutdown deadline, which
 * must tell the plugins before the client reads its 421; whichever decides
 * first wins.
 */
export class MessageVerdict {
  private decision: boolean | undefined;
  private readonly waiting: ((accepted: boolean) => void)[] = [];

  /** The promise a queue handler gets as `accepted`. */
  promise(): Promise<boolean> {
    if (this.decision !== undefined) return Promise.resolve(this.decision);
    return new Promise<boolean>((resolve) => this.waiting.push(resolve));
  }

  get rejected(): boolean {
    return this.decision === false;
  }

  /** Accepts the message unless it was rejected; returns true when it is accepted. */
  accept(): boolean {
    return this.decide(true);
  }

  /** Rejects the message unless it was accepted; returns true when it is rejected. */
  reject(): boolean {
    return !this.decide(false);
  }

  private decide(accepted: boolean): boolean {
    if (this.decision === undefined) {
      this.decision = accepted;
      for (const resolve of this.waiting.splice(0)) resolve(accepted);
    }
    return this.decision;
  }
}

/** Groups the recipients by route; a recipient without a route gets "". */
function byRoute(recipients: Recipient[]): Map<string, Recipient[]> {
  const groups = new Map<string, Recipient[]>();
  for (const recipient of recipients) {
    const route = recipient.route ?? "";
    const list = groups.get(route) ?? [];
    list.push(recipient);
    groups.set(route, list);
  }
  return groups;
}

/**
 * Calls the queue handler of each route's owner with that route's
 * recipients, one after the other, until one does not answer OK. Each call
 * gets an `accepted` promise: it resolves true once every route stored the
 * message, and false for every called owner when a route fails (a later
 * one, or its own call that missed server.hookTimeout) or `verdict` is
 * rejected from outside, so those owners remove their copies and the
 * client's retry does not duplicate them. Once `verdict` is rejected, no
 * further owner is called.
 */
export async function storeRoutes(
  runner: HookRunner,
  context: { connection: Connection; transaction: Transaction; message: Message },
  logger: LogTarget,
  verdict = new MessageVerdict(),
): Promise<StoreResult> {
  const { connection, transaction, message } = context;
  const stored: string[] = [];

  for (const [route, recipients] of byRoute(transaction.recipients)) {
    if (verdict.rejected) return rejected(transaction, stored);
    const owner = route ? runner.routeOwner(route) : undefined;
    if (!owner) {
      verdict.reject();
      return failed(transaction, stored, route, undefined);
    }
    const outcome = await runner.runPlugin(
      owner,
      "queue",
      { connection, transaction, message, route, recipients, accepted: verdict.promise() },
      logger,
    );
    if (verdict.rejected) return rejected(transaction, [...stored, route]);
    if (outcome.kind !== "answer" || outcome.answer.verdict !== "OK") {
      verdict.reject();
      return failed(transaction, stored, route, outcome);
    }
    stored.push(route);
  }
  if (!verdict.accept()) return rejected(transaction, stored);
  return { kind: "stored" };
}

function failed(transaction: Transaction, stored: string[], route: string, outcome: HookOutcome | undefined): StoreResult {
  if (stored.length > 0) {
    // NOTE: a plugin that ignores `accepted` keeps its copy, so the client's retry duplicates it.
    transaction.logger.warn({ stored, failed: route || null }, "message rejected after some routes stored it; their copies are removed");
  }
  return { kind: "failed", route, outcome };
}

/** `called`: the routes whose owner was called, and which may have stored the message. */
function rejected(transaction: Transaction, called: string[]): StoreResult {
  if (called.length > 0) {
    transaction.logger.warn({ stored: called }, "message rejected at the shutdown deadline after some routes stored it; their copies are removed");
  }
  return { kind: "rejected" };
}
