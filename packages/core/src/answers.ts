/**
 * The verdict a plugin gives at a hook. CONT is expressed by returning nothing.
 */
export type Verdict =
  | "OK"
  | "DENY"
  | "DENYSOFT"
  | "DENYDISCONNECT"
  | "DENYSOFTDISCONNECT";

/** Reply details that a plugin may set on an answer instead of the defaults. */
export interface ReplyOptions {
  /** Three-digit SMTP reply code, for example 550. */
  code?: number;
  /** RFC 3463 enhanced status code, for example "5.7.1". */
  enhanced?: string;
  /** Reply text. Keep it generic: details belong in the log. */
  message?: string;
}

/** Options of `ok()`: reply details plus the data some hooks accept. */
export interface OkOptions extends ReplyOptions {
  /** At rcpt: the route whose owner stores this recipient at queue. */
  route?: string;
  /** At get_mx: the hosts to try, replacing DNS lookups. */
  mx?: MxHost[];
  /** At auth: the identity to record on the connection (default: the user name). */
  user?: string;
}

/** A mail exchanger to try for a destination domain. */
export interface MxHost {
  exchange: string;
  priority: number;
  port?: number;
}

/** A plugin's answer at a hook: anything but CONT. */
export interface Answer extends OkOptions {
  readonly verdict: Verdict;
}

/** The return type of a hook handler; `undefined` means CONT. */
export type HookResult = Answer | undefined | void;

/** The answers without options, made once: handlers return them for most commands. */
const PLAIN = new Map<Verdict, Answer>();

function answer(verdict: Verdict, options?: OkOptions): Answer {
  if (options === undefined) {
    let plain = PLAIN.get(verdict);
    if (!plain) {
      plain = Object.freeze({ verdict });
      PLAIN.set(verdict, plain);
    }
    return plain;
  }
  return Object.freeze({ ...options, verdict });
}

/** Accepts at this hook and stops asking the plugins after this one. */
export const ok = (options?: OkOptions): Answer => answer("OK", options);

/** Rejects permanently (5xx). */
export const deny = (options?: ReplyOptions): Answer => answer("DENY", options);

/** Rejects temporarily (4xx), so the client retries later. */
export const denySoft = (options?: ReplyOptions): Answer =>
  answer("DENYSOFT", options);

/** Rejects permanently, then closes the connection. */
export const denyDisconnect = (options?: ReplyOptions): Answer =>
  answer("DENYDISCONNECT", options);

/** Rejects temporarily, then closes the connection. */
export const denySoftDisconnect = (options?: ReplyOptions): Answer =>
  answer("DENYSOFTDISCONNECT", options);

const VERDICTS = new Set<string>([
  "OK",
  "DENY",
  "DENYSOFT",
  "DENYDISCONNECT",
  "DENYSOFTDISCONNECT",
]);

/**
 * Checks that a handler's return value is an answer. The check reads only
 * the verdict, so answers made by a different copy of @mailroom/core pass.
 */
export function isAnswer(value: unknown): value is Answer {
  if (typeof value !== "object" || value === null) return false;
  const verdict = (value as { verdict?: unknown }).verdict;
  return typeof verdict === "string" && VERDICTS.has(verdict);
}
