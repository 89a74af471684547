import type { HookResult } from "./answers.js";
import type { Message } from "./message/message.js";
import type {
  Connection,
  Recipient,
  Transaction,
} from "./session-state.js";
import type { Address, Parameters } from "./smtp/address.js";

/** Hooks of an SMTP session, in the order a session fires them. */
export const SESSION_HOOKS = [
  "connect",
  "helo",
  "ehlo",
  "auth",
  "vrfy",
  "expn",
  "mail",
  "rcpt",
  "data",
  "data_post",
  "queue",
  "reset",
  "unknown_command",
  "disconnect",
] as const;

/** Hooks fired by the outbound queue (plugin-mx) for each delivery. */
export const OUTBOUND_HOOKS = [
  "get_mx",
  "deliver",
  "delivered",
  "deferred",
  "bounce",
] as const;

export const HOOK_NAMES = [...SESSION_HOOKS, ...OUTBOUND_HOOKS] as const;

export type SessionHookName = (typeof SESSION_HOOKS)[number];
export type OutboundHookName = (typeof OUTBOUND_HOOKS)[number];
export type HookName = (typeof HOOK_NAMES)[number];

interface WithConnection {
  connection: Connection;
}

interface WithTransaction extends WithConnection {
  transaction: Transaction;
}

/** A message in the outbound queue, as outbound hooks see it. */
export interface OutboundContext {
  /** Queue record id. */
  id: string;
  /** Envelope sender; "" for the null reverse-path. */
  sender: string;
  /** Destination domain of this record. */
  domain: string;
  /** Recipients still to deliver in this attempt. */
  recipients: string[];
  /** Delivery attempts made before this one. */
  attempts: number;
}

/** The result of delivering to one recipient. */
export interface RecipientResult {
  recipient: string;
  /** SMTP reply code from the remote server, or 0 when none was received. */
  code: number;
  /** Enhanced status code, for example "5.1.1". */
  enhanced: string;
  /** The remote reply or the local error, as text. */
  response: string;
  /** The host that gave the reply, when one did. */
  remoteMta?: string;
}

/** The arguments each hook's handler receives. */
export interface HookArgs {
  connect: WithConnection;
  helo: WithConnection & { name: string };
  ehlo: WithConnection & { name: string };
  auth: WithConnection & {
    method: string;
    username: string;
    password: string;
  };
  vrfy: WithConnection & { argument: string };
  expn: WithConnection & { argument: string };
  mail: WithTransaction & { address: Address | null; params: Parameters };
  rcpt: WithTransaction & { address: Address; params: Parameters };
  data: WithTransaction;
  data_post: WithTransaction & { message: Message };
  queue: WithTransaction & {
    message: Message;
    /** The route being stored, owned by the plugin being called. */
    route: string;
    /** The recipients of this route only. */
    recipients: Recipient[];
    /**
     * Resolves true once every route stored the message (the client gets
     * 250), or false when the engine rejects it after this call: this call
     * missed server.hookTimeout, another route failed, or the server's
     * shutdownTimeout passed while the message had no reply yet. On false,
     * remove the copy this call stored, even while this call still runs.
     * Hand a copy on for delivery only on true.
     */
    accepted: Promise<boolean>;
  };
  reset: WithConnection & { transaction: Transaction | undefined };
  unknown_command: WithConnection & { verb: string; argument: string };
  disconnect: WithConnection;
  get_mx: { message: OutboundContext };
  deliver: { message: OutboundContext; host: string; address: string };
  delivered: { message: OutboundContext; results: RecipientResult[] };
  deferred: {
    message: OutboundContext;
    results: RecipientResult[];
    nextAttemptAt: number;
  };
  bounce: { message: OutboundContext; results: RecipientResult[] };
}

/** A handler for hook `H`; returning nothing means CONT. */
export type HookHandler<H extends HookName> = (
  args: HookArgs[H],
) => HookResult | Promise<HookResult>;

/** The handlers a plugin's setup returns, keyed by hook name. */
export type HookHandlers = { [H in HookName]?: HookHandler<H> };
