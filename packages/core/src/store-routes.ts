import type { Message } from "./message/message.js";
import type { HookOutcome, HookRunner, LogTarget } from "./plugins/runner.js";
import type { Connection, Recipient, Transaction } from "./session-state.js";

/** The result of calling the queue hook of every route's owner. */
export type StoreResult =
  | { kind: "stored" }
  /** `route` was not stored: `outcome` is its owner's answer, or undefined when no plugin owns it. */
  | { kind: "failed"; route: string; outcome: HookOutcome | undefined };

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
 * one, or its own call that missed server.hookTimeout), so those owners
 * remove their copies and the client's retry does not duplicate them.
 */
export async function storeRoutes(
  runner: HookRunner,
  context: { connection: Connection; transaction: Transaction; message: Message },
  logger: LogTarget,
): Promise<StoreResult> {
  const { connection, transaction, message } = context;
  const decisions: ((accepted: boolean) => void)[] = [];
  const decide = (accepted: boolean) => {
    for (const resolve of decisions) resolve(accepted);
  };
  const stored: string[] = [];

  for (const [route, recipients] of byRoute(transaction.recipients)) {
    const owner = route ? runner.routeOwner(route) : undefined;
    if (!owner) {
      decide(false);
      return failed(transaction, stored, route, undefined);
    }
    const accepted = new Promise<boolean>((resolve) => decisions.push(resolve));
    const outcome = await runner.runPlugin(
      owner,
      "queue",
      { connection, transaction, message, route, recipients, accepted },
      logger,
    );
    if (outcome.kind !== "answer" || outcome.answer.verdict !== "OK") {
      decide(false);
      return failed(transaction, stored, route, outcome);
    }
    stored.push(route);
  }
  decide(true);
  return { kind: "stored" };
}

function failed(transaction: Transaction, stored: string[], route: string, outcome: HookOutcome | undefined): StoreResult {
  if (stored.length > 0) {
    // NOTE: a plugin that ignores `accepted` keeps its copy, so the client's retry duplicates it.
    transaction.logger.warn({ stored, failed: route || null }, "message rejected after some routes stored it; their copies are removed");
  }
  return { kind: "failed", route, outcome };
}
