import type { Answer } from "./answers.js";
import type { HookOutcome, HookRunner } from "./plugins/runner.js";
import { replyForOutcome, type Reply } from "./replies.js";
import type { Connection, Transaction } from "./session-state.js";
import type { Address, Parameters } from "./smtp/address.js";

/** The inputs of runRcpt: the plugin set, the session and one recipient. */
export interface RcptContext {
  runner: HookRunner;
  connection: Connection;
  transaction: Transaction;
  address: Address;
  params: Parameters;
  /** `server.limits.maxRecipients`; the engine's message injector sets none. */
  maxRecipients?: number;
}

/** The reply to RCPT and the plugin answer behind it. */
export interface RcptResult {
  reply: Reply;
  /** True when the recipient joined the transaction. */
  accepted: boolean;
  /** The rcpt hook's outcome; undefined when the engine replied without calling the hook. */
  outcome: HookOutcome | undefined;
  /** The plugin's answer, when one answered. */
  answer: Answer | undefined;
}

const NOT_ACCEPTED: Reply = { code: 550, enhanced: "5.7.1", message: "Recipient not accepted" };
const TOO_MANY: Reply = { code: 452, enhanced: "4.5.3", message: "Too many recipients" };
const NO_ROUTE: Reply = { code: 451, enhanced: "4.3.0", message: "Temporary local problem, try again later" };

/**
 * Runs the rcpt hook for one recipient and applies the engine's rules to
 * its outcome. A recipient accepted with OK joins the transaction on the
 * route the answer names, or on the accepting plugin's first registered
 * route. A route that no plugin registered gets 451 4.3.0 and an error in
 * the log, because every retry would fail at queue. A 5.1.1 refusal counts
 * as a failed lookup on the connection.
 */
export async function runRcpt(context: RcptContext): Promise<RcptResult> {
  const { runner, connection, transaction, address, params } = context;
  if (context.maxRecipients !== undefined && transaction.recipients.length >= context.maxRecipients) {
    return { reply: TOO_MANY, accepted: false, outcome: undefined, answer: undefined };
  }

  const outcome = await runner.run("rcpt", { connection, transaction, address, params }, transaction);
  const reply = replyForOutcome("rcpt", outcome) ?? NOT_ACCEPTED;
  if (outcome.kind === "error") return { reply, accepted: false, outcome, answer: undefined };
  const answer = outcome.kind === "answer" ? outcome.answer : undefined;

  if (outcome.kind === "answer" && outcome.answer.verdict === "OK") {
    const route = outcome.answer.route ?? runner.firstRoute(outcome.plugin);
    if (!route || !runner.routeOwner(route)) {
      transaction.logger.error(
        { plugin: outcome.plugin, route: route ?? null, recipient: address.address },
        "recipient accepted on a route that no plugin registered; answer ok({ route }) with a registered route",
      );
      return { reply: NO_ROUTE, accepted: false, outcome, answer };
    }
    transaction.recipients.push({ address, params, route, acceptedBy: outcome.plugin });
    return { reply, accepted: true, outcome, answer };
  }
  if (reply.enhanced === "5.1.1") {
    connection.failedLookups += 1;
  }
  return { reply, accepted: false, outcome, answer };
}
