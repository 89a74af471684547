import type { Answer, Verdict } from "./answers.js";
import type { HookName, SessionHookName } from "./hooks.js";
import type { HookOutcome } from "./plugins/runner.js";
import { isAsciiText } from "./smtp/domain.js";

/** An SMTP reply to send. `enhanced` is omitted only where RFC 2034 says so. */
export interface Reply {
  code: number;
  enhanced?: string;
  message: string;
  /** Close the connection after sending the reply. */
  close?: boolean;
}

type Outcome = Verdict | "CONT" | "ERROR";
type ReplyTable = Partial<Record<Outcome, Reply | null>>;

const SOFT_CLOSE: Reply = { code: 421, enhanced: "4.3.0", message: "Service temporarily unavailable", close: true };
const LOCAL_ERROR: Reply = { code: 451, enhanced: "4.3.0", message: "Temporary local problem, try again later" };

/**
 * Replies for each hook and outcome when the answer sets no code of its own.
 * `null` means the hook sends no reply of its own (the engine continues).
 * ERROR is a handler that threw or passed the hook deadline.
 */
const TABLE: Record<SessionHookName, ReplyTable> = {
  connect: {
    CONT: null,
    OK: null,
    DENY: { code: 554, enhanced: "5.7.1", message: "Connection refused", close: true },
    DENYDISCONNECT: { code: 554, enhanced: "5.7.1", message: "Connection refused", close: true },
    DENYSOFT: { code: 421, enhanced: "4.7.0", message: "Try again later", close: true },
    DENYSOFTDISCONNECT: { code: 421, enhanced: "4.7.0", message: "Try again later", close: true },
    ERROR: SOFT_CLOSE,
  },
  helo: {
    DENY: { code: 550, message: "HELO rejected" },
    DENYSOFT: { code: 450, message: "HELO rejected, try again later" },
    ERROR: { code: 451, message: "Temporary local problem, try again later" },
  },
  ehlo: {
    DENY: { code: 550, message: "EHLO rejected" },
    DENYSOFT: { code: 450, message: "EHLO rejected, try again later" },
    ERROR: { code: 451, message: "Temporary local problem, try again later" },
  },
  auth: {
    CONT: { code: 535, enhanced: "5.7.8", message: "Authentication credentials invalid" },
    OK: { code: 235, enhanced: "2.7.0", message: "Authentication successful" },
    DENY: { code: 535, enhanced: "5.7.8", message: "Authentication credentials invalid" },
    DENYSOFT: { code: 454, enhanced: "4.7.0", message: "Temporary authentication failure" },
    ERROR: { code: 454, enhanced: "4.7.0", message: "Temporary authentication failure" },
  },
  vrfy: {
    CONT: { code: 252, enhanced: "2.1.5", message: "Cannot verify the user, but will accept the message" },
    OK: { code: 250, enhanced: "2.1.5", message: "Mailbox exists" },
    DENY: { code: 550, enhanced: "5.1.1", message: "Mailbox not found" },
    DENYSOFT: { code: 450, enhanced: "4.3.0", message: "Cannot verify now, try again later" },
  },
  expn: {
    CONT: { code: 502, enhanced: "5.5.1", message: "EXPN not available" },
    OK: { code: 250, enhanced: "2.1.5", message: "OK" },
    DENY: { code: 550, enhanced: "5.7.1", message: "EXPN not allowed" },
    DENYSOFT: { code: 450, enhanced: "4.3.0", message: "Cannot expand now, try again later" },
  },
  mail: {
    CONT: { code: 250, enhanced: "2.1.0", message: "Sender OK" },
    OK: { code: 250, enhanced: "2.1.0", message: "Sender OK" },
    DENY: { code: 550, enhanced: "5.7.1", message: "Sender rejected" },
    DENYSOFT: { code: 450, enhanced: "4.7.1", message: "Sender temporarily rejected, try again later" },
  },
  rcpt: {
    CONT: { code: 550, enhanced: "5.7.1", message: "Recipient not accepted" },
    OK: { code: 250, enhanced: "2.1.5", message: "Recipient OK" },
    DENY: { code: 550, enhanced: "5.7.1", message: "Recipient rejected" },
    DENYSOFT: { code: 450, enhanced: "4.7.1", message: "Recipient temporarily rejected, try again later" },
  },
  data: {
    CONT: null,
    OK: null,
    DENY: { code: 554, enhanced: "5.7.1", message: "Message rejected" },
    DENYSOFT: { code: 451, enhanced: "4.7.1", message: "Message temporarily rejected, try again later" },
  },
  data_post: {
    CONT: null,
    OK: null,
    DENY: { code: 554, enhanced: "5.7.1", message: "Message rejected" },
    DENYSOFT: { code: 451, enhanced: "4.7.1", message: "Message temporarily rejected, try again later" },
  },
  queue: {
    CONT: { code: 451, enhanced: "4.3.0", message: "Message not stored, try again later" },
    OK: { code: 250, enhanced: "2.0.0", message: "Message accepted" },
    DENY: { code: 554, enhanced: "5.3.0", message: "Message not accepted for delivery" },
    DENYSOFT: { code: 451, enhanced: "4.3.0", message: "Message not stored, try again later" },
  },
  unknown_command: {
    CONT: { code: 500, enhanced: "5.5.1", message: "Command not recognized" },
    OK: { code: 250, enhanced: "2.0.0", message: "OK" },
    DENY: { code: 500, enhanced: "5.5.1", message: "Command not recognized" },
    DENYSOFT: { code: 450, enhanced: "4.5.0", message: "Command not available now" },
  },
  reset: { ERROR: null },
  disconnect: { ERROR: null },
};

function isDisconnect(verdict: Outcome): boolean {
  return verdict === "DENYDISCONNECT" || verdict === "DENYSOFTDISCONNECT";
}

/** Returns the table entry for a hook and outcome, with the *DISCONNECT variants folded in. */
function defaultReply(hook: SessionHookName, outcome: Outcome): Reply | null | undefined {
  const table = TABLE[hook];
  if (outcome in table) return table[outcome];
  if (outcome === "DENYDISCONNECT") return table.DENY;
  if (outcome === "DENYSOFTDISCONNECT") return table.DENYSOFT;
  if (outcome === "ERROR") return LOCAL_ERROR;
  return undefined;
}

/**
 * Turns a hook's outcome into the reply to send, applying the answer's own
 * code, enhanced code and text. Returns null when the hook sends no reply of
 * its own and the engine goes on (for example OK at connect or data).
 */
export function replyFor(
  hook: SessionHookName,
  answer: Answer | undefined | "ERROR",
): Reply | null {
  const outcome: Outcome = answer === "ERROR" ? "ERROR" : answer?.verdict ?? "CONT";
  const base = defaultReply(hook, outcome);
  if (base === undefined || base === null) return null;
  const options: Partial<Answer> = typeof answer === "object" ? answer : {};
  // A plugin's code must agree with its verdict, or the reply would contradict
  // what the engine does. A code that does not agree is ignored.
  const code = codeFitsVerdict(options.code, outcome) ? options.code! : base.code;
  const withoutEnhanced = hook === "helo" || hook === "ehlo";
  const ownEnhanced = enhancedFits(options.enhanced, code) ? options.enhanced : undefined;
  const enhanced = withoutEnhanced
    ? undefined
    : ownEnhanced ?? matchingEnhanced(code, base) ?? genericEnhanced(code);
  const reply: Reply = {
    code,
    message: options.message ?? base.message,
  };
  if (enhanced) reply.enhanced = enhanced;
  if (base.close || isDisconnect(outcome) || code === 421) reply.close = true;
  return reply;
}

/**
 * Returns the reply for the outcome of running a hook: the hook's ERROR
 * reply for a handler that failed, else replyFor with the plugin's answer,
 * or with none for CONT. Returns null where the engine goes on.
 */
export function replyForOutcome(hook: SessionHookName, outcome: HookOutcome): Reply | null {
  if (outcome.kind === "error") return replyFor(hook, "ERROR");
  return replyFor(hook, outcome.kind === "answer" ? outcome.answer : undefined);
}

/** The reply code classes each outcome may use. */
const CODE_CLASSES: Record<Outcome, number[]> = {
  CONT: [2, 3, 4, 5],
  OK: [2, 3],
  DENY: [5],
  DENYDISCONNECT: [5],
  DENYSOFT: [4],
  DENYSOFTDISCONNECT: [4],
  ERROR: [4],
};

function isReplyCode(code: number | undefined): code is number {
  return code !== undefined && Number.isInteger(code) && code >= 200 && code <= 599;
}

function codeFitsVerdict(code: number | undefined, outcome: Outcome): boolean {
  return isReplyCode(code) && CODE_CLASSES[outcome].includes(Math.floor(code / 100));
}

/** RFC 3463 syntax: class 2, 4 or 5, then subject and detail of up to three digits each. */
const ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3}$/;

/** Checks for an RFC 3463 code whose class is the reply code's first digit. */
function enhancedFits(enhanced: string | undefined, code: number): boolean {
  if (enhanced === undefined || !ENHANCED_CODE.test(enhanced)) return false;
  return enhanced[0] === String(code)[0];
}

/** The codes a reply uses in place of some that a plugin's answer set, and why. */
export interface ReplacedCodes {
  /** The problem with the answer's codes, as a sentence fragment for a log line. */
  reason: string;
  usedCode: number;
  usedEnhanced: string | undefined;
}

/**
 * Compares the code and enhanced code of a plugin's answer with the reply
 * that replyFor makes of it. Returns undefined when the reply uses every
 * code that the answer set, when the answer set none, or when the hook
 * sends no SMTP reply for it (OK at data, every outbound hook). HELO and
 * EHLO replies never carry an enhanced code, so one set there is not
 * reported.
 */
export function replacedCodes(hook: HookName, answer: Answer): ReplacedCodes | undefined {
  const { code, enhanced, verdict } = answer;
  if (code === undefined && enhanced === undefined) return undefined;
  if (!Object.hasOwn(TABLE, hook)) return undefined;
  const reply = replyFor(hook as SessionHookName, answer);
  if (!reply) return undefined;

  const reasons: string[] = [];
  if (code !== undefined && code !== reply.code) {
    const classes = CODE_CLASSES[verdict].map((digit) => `${digit}xx`).join(" or ");
    reasons.push(
      isReplyCode(code)
        ? `reply code ${code} does not fit verdict ${verdict}, which takes ${classes}`
        : `reply code ${JSON.stringify(code)} is invalid (expected an integer from 200 to 599)`,
    );
  }
  const sendsEnhanced = hook !== "helo" && hook !== "ehlo";
  if (sendsEnhanced && enhanced !== undefined && enhanced !== reply.enhanced) {
    reasons.push(
      typeof enhanced === "string" && ENHANCED_CODE.test(enhanced)
        ? `enhanced status code ${enhanced} does not match reply code ${reply.code}`
        : `enhanced status code ${JSON.stringify(enhanced)} is invalid (expected class.subject.detail, for example 5.7.1)`,
    );
  }
  if (reasons.length === 0) return undefined;
  return { reason: reasons.join(", and "), usedCode: reply.code, usedEnhanced: reply.enhanced };
}

/** Uses the default enhanced code only when its class matches the reply code. */
function matchingEnhanced(code: number, base: Reply | null | undefined): string | undefined {
  if (!base?.enhanced) return undefined;
  return base.enhanced[0] === String(code)[0] ? base.enhanced : undefined;
}

function genericEnhanced(code: number): string {
  return `${Math.floor(code / 100)}.0.0`;
}

/** Formats a reply as wire lines: each line carries the code and the enhanced code. */
export function formatReply(reply: { code: number; enhanced?: string; message: string | string[] }): string {
  const { message } = reply;
  // Most replies are one short line of printable ASCII, which needs none of the work below.
  if (typeof message === "string" && message.length < 400 && PLAIN_LINE.test(message)) {
    return reply.enhanced ? `${reply.code} ${reply.enhanced} ${message}` : `${reply.code} ${message}`;
  }
  const lines = Array.isArray(reply.message) ? reply.message : reply.message.split(/\r?\n/);
  const enhanced = reply.enhanced ? `${reply.enhanced} ` : "";
  return lines
    .map((line, index) => {
      const separator = index < lines.length - 1 ? "-" : " ";
      const text = asciiReplyText(line).replace(/[\x00-\x1f\x7f]/g, " ");
      return truncate(`${reply.code}${separator}${enhanced}${text}`.trimEnd());
    })
    .join("\r\n");
}

/**
 * Returns `message` as the text of a one-line reply, the way formatReply
 * would send it. Line breaks and other control characters become spaces,
 * characters outside US-ASCII become "?", and the text is cut so that the
 * line with its code and enhanced code fits MAX_REPLY_LINE. It serves the
 * replies that smtp-server writes itself, which it neither splits nor cuts.
 */
export function oneLineReplyText(code: number, enhanced: string | undefined, message: string): string {
  const line = formatReply({ code, ...(enhanced ? { enhanced } : {}), message: message.replace(/\r?\n/g, " ") });
  return line.slice(`${code} ${enhanced ? `${enhanced} ` : ""}`.length);
}

/** A character that RFC 5321 section 4.2 does not allow in reply text, which is US-ASCII. */
const NON_ASCII_ALL = /[^\x00-\x7f]/gu;

/** Checks whether reply text contains characters outside US-ASCII. */
export function hasNonAsciiText(text: string): boolean {
  return !isAsciiText(text);
}

/** Replaces each character outside US-ASCII (one per code point) with "?". */
export function asciiReplyText(text: string): string {
  return text.replace(NON_ASCII_ALL, "?");
}

/** Printable ASCII with no trailing space: a reply line as it is sent. */
const PLAIN_LINE = /^[\x20-\x7e]*[\x21-\x7e]$/;

/** RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. */
export const MAX_REPLY_LINE = 510;

function truncate(line: string): string {
  if (Buffer.byteLength(line) <= MAX_REPLY_LINE) return line;
  let cut = line.slice(0, MAX_REPLY_LINE);
  while (Buffer.byteLength(cut) > MAX_REPLY_LINE) cut = cut.slice(0, -1);
  return cut;
}
