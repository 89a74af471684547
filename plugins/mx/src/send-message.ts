import { randomBytes } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { pipeline, Transform, type Readable } from "node:stream";
import type { SMTPConnectionSendInfo } from "nodemailer/lib/smtp-connection";
import type { RecipientResult } from "@mailroom/core";
import { planEnvelope, type EnvelopePlan, type Utf8Need } from "./international.js";
import type { SmtpClient } from "./smtp-client.js";
import type { MessageLocation } from "./store.js";

/** One queued message to send over a connection. */
export interface Job {
  id: string;
  sender: string;
  recipients: string[];
  /** The message itself, or where it starts in its queue file. */
  message: Buffer | MessageLocation;
  /** The client sent SMTPUTF8 and the header fields are UTF-8, so the message goes only with SMTPUTF8. */
  utf8Headers: boolean;
  /** The message has octets above 127, so it goes only to a server that offers 8BITMIME. */
  eightBit: boolean;
  /** The client sent BODY=8BITMIME, which goes on to a server that offers 8BITMIME even for a 7-bit message. */
  body8BitMime: boolean;
}

/**
 * The result of delivering to one recipient. `temporary` marks a 5xx reply
 * that defers the recipient instead of bouncing it (see isTemporaryRefusal
 * in deliver.ts).
 */
export interface DeliveryResult extends RecipientResult {
  temporary?: boolean;
}

/** An error of nodemailer's SMTP client, with the fields it sets. */
export type SmtpError = Error & {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
};

const ENHANCED = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/;

/**
 * Reads the enhanced status code of a reply, or derives a generic one from
 * the reply code. An enhanced code whose class differs from the reply
 * code's first digit is ignored, because RFC 2034 section 4 requires them
 * to agree. A reply code outside 2xx, 4xx and 5xx gets the class that the
 * queue gives it: 6xx and above fail like 5xx, and 1xx or 3xx where a final
 * reply was due defer like 4xx.
 */
export function enhancedOf(code: number, response: string): string {
  const match = ENHANCED.exec(response);
  if (match && match[1]![0] === String(code)[0]) return match[1]!;
  if (code >= 500) return "5.0.0";
  if (code >= 200 && code < 300) return "2.0.0";
  return "4.0.0";
}

/** A connection-level problem: the next address or host is tried. */
export class ConnectionFailure extends Error {
  constructor(
    message: string,
    readonly code = 0,
    readonly response = "",
    /** The command that got the reply, as nodemailer names it: CONN for the greeting, EHLO, AUTH PLAIN. */
    readonly command = "",
  ) {
    super(message);
  }
}

/**
 * A failure on this side that concerns one message only: its queue file
 * could not be read, or nodemailer rejected its envelope. Other messages
 * go on. `connectionUsable` is false when the failure left the connection
 * in the middle of DATA, so it must be closed.
 */
export class LocalFailure extends Error {
  constructor(
    message: string,
    readonly connectionUsable: boolean,
  ) {
    super(message);
  }
}

/** The connection after a message: usable, broken by the remote, or left unusable by a local failure. */
export type ConnectionState = { state: "usable" } | { state: "broken"; failure: ConnectionFailure } | { state: "unusable" };

/** The outcome of sending one message over a connection. */
export interface MessageOutcome {
  /** A result for every recipient of the job. */
  results: DeliveryResult[];
  /** The last transaction ended without a reply to a message, so the next one starts with RSET. */
  needsReset: boolean;
  connection: ConnectionState;
}

/** Limits that a connection applies to each message. */
export interface MessageLimits {
  /** Recipients per transaction; a message with more goes in several transactions. */
  maxRecipientsPerTransaction: number;
}

const UTF8_NEEDS: Record<Utf8Need, string> = {
  sender: "the non-ASCII local part of the sender",
  recipient: "the non-ASCII local part of the recipient",
  headers: "the UTF-8 header fields of the message",
};

/** Returns the result of a recipient that the server cannot take because it does not offer SMTPUTF8. */
function smtpUtf8Refusal(recipient: string, need: Utf8Need, remoteMta: string): DeliveryResult {
  return {
    recipient,
    code: 550,
    enhanced: "5.6.7",
    response: `${remoteMta} does not offer SMTPUTF8 (RFC 6531), which is needed for ${UTF8_NEEDS[need]}`,
    remoteMta,
  };
}

/** Returns the result of a recipient of an 8-bit message that the server cannot take because it does not offer 8BITMIME. */
function eightBitMimeRefusal(recipient: string, remoteMta: string): DeliveryResult {
  return {
    recipient,
    code: 550,
    enhanced: "5.6.3",
    response: `${remoteMta} does not offer 8BITMIME (RFC 6152), which is needed for the 8-bit content of the message`,
    remoteMta,
  };
}

/** Characters that no address on a MAIL FROM or RCPT TO line may contain (RFC 5321 section 4.1.2). */
const CONTROL_CHARACTER = /[\x00-\x1f\x7f]/;

/** Returns the result of a recipient whose envelope cannot go on the wire. */
function invalidAddress(recipient: string, role: "sender" | "recipient", address: string): DeliveryResult {
  const enhanced = role === "sender" ? "5.1.7" : "5.1.3";
  const quoted = JSON.stringify(address);
  return { recipient, code: 550, enhanced, response: `invalid ${role} address ${quoted}: it contains a control character` };
}

/** Returns the result of a recipient whose message failed on this side. */
function localFailureResult(recipient: string, failure: LocalFailure): DeliveryResult {
  return { recipient, code: 451, enhanced: "4.3.0", response: `451 4.3.0 local error: ${failure.message}` };
}

/** Returns the result of a recipient left without a reply when the connection broke. */
function brokenResult(recipient: string, failure: ConnectionFailure, host: string, address: string): DeliveryResult {
  return { recipient, code: 0, enhanced: "4.4.1", response: `${host} [${address}]: ${failure.message}` };
}

/**
 * True for a reply that reports the server's limit of recipients per
 * transaction: 452 (RFC 5321 section 4.5.3.1.10), or 552 with enhanced code
 * 5.5.3, which some servers send and the client should be prepared for.
 */
function isRecipientLimit(result: DeliveryResult): boolean {
  return result.code === 452 || (result.code === 552 && result.enhanced === "5.5.3");
}

/** Sends RSET; false when the connection is no longer usable. */
export function resetConnection(connection: SmtpClient): Promise<boolean> {
  return new Promise((resolve) => connection.reset((error) => resolve(!error)));
}

/**
 * Sends one message over an open connection and returns a result for each
 * recipient. Domains of addresses with an ASCII local part go as A-labels.
 * Recipients that the server cannot take are not sent: those that need
 * SMTPUTF8 where it is not offered get 5.6.7 (RFC 6531 section 3.2), and
 * every recipient of an 8-bit message gets 5.6.3 where 8BITMIME is not
 * offered (RFC 6152). The others go in transactions of at most
 * `maxRecipientsPerTransaction`. Recipients that the server turns away for
 * its own limit go in a further transaction at once, as RFC 5321 section
 * 3.3 advises, while each transaction delivers to someone.
 *
 * Throws ConnectionFailure when the connection broke before any
 * transaction of the message ended, so the caller can send it again over
 * another address. A later break, or a failure on this side, ends with
 * results for every recipient and the connection's state.
 */
export async function sendMessage(
  connection: SmtpClient,
  job: Job,
  host: { name: string; address: string },
  limits: MessageLimits,
  needsResetBefore: boolean,
): Promise<MessageOutcome> {
  const remoteMta = host.name;
  const plan = planEnvelope(job, connection.offers("SMTPUTF8"));
  const results = plan.refused.map(({ recipient, need }) => smtpUtf8Refusal(recipient, need, remoteMta));
  const recipientsOf = (wire: string) => plan.recipientsOf.get(wire)!;
  let waiting = plan.to;
  if (waiting.length > 0 && job.eightBit && !connection.offers("8BITMIME")) {
    for (const wire of waiting) results.push(...recipientsOf(wire).map((recipient) => eightBitMimeRefusal(recipient, remoteMta)));
    waiting = [];
  }
  if (waiting.length > 0 && plan.from !== false && CONTROL_CHARACTER.test(plan.from)) {
    for (const wire of waiting) results.push(...recipientsOf(wire).map((recipient) => invalidAddress(recipient, "sender", job.sender)));
    waiting = [];
  }
  for (const wire of waiting.filter((address) => CONTROL_CHARACTER.test(address))) {
    results.push(...recipientsOf(wire).map((recipient) => invalidAddress(recipient, "recipient", recipient)));
  }
  waiting = waiting.filter((address) => !CONTROL_CHARACTER.test(address));

  const outcomes = new Map<string, DeliveryResult>();
  const finish = (connectionState: ConnectionState, needsReset: boolean): MessageOutcome => {
    for (const [wire, outcome] of outcomes) results.push(...recipientsOf(wire).map((recipient) => ({ ...outcome, recipient })));
    return { results, needsReset, connection: connectionState };
  };
  let needsReset = needsResetBefore;
  let transactionsEnded = 0;
  while (waiting.length > 0) {
    const batch = waiting.slice(0, limits.maxRecipientsPerTransaction);
    waiting = waiting.slice(batch.length);
    let transaction: TransactionOutcome;
    try {
      if (needsReset && !(await resetConnection(connection))) {
        throw new ConnectionFailure(`${host.name} [${host.address}] failed RSET`);
      }
      needsReset = false;
      transaction = await sendTransaction(connection, plan, batch, job);
    } catch (error) {
      if (error instanceof LocalFailure) {
        for (const wire of [...batch, ...waiting]) outcomes.set(wire, localFailureResult(wire, error));
        return finish(error.connectionUsable ? { state: "usable" } : { state: "unusable" }, needsReset);
      }
      const failure = error instanceof ConnectionFailure ? error : new ConnectionFailure(String(error));
      if (transactionsEnded === 0) throw failure;
      for (const wire of [...batch, ...waiting]) outcomes.set(wire, brokenResult(wire, failure, host.name, host.address));
      return finish({ state: "broken", failure }, needsReset);
    }
    transactionsEnded += 1;
    needsReset = transaction.needsReset;
    const delivered = [...transaction.results.values()].some((result) => result.code >= 200 && result.code < 300);
    const limited: string[] = [];
    for (const [wire, result] of transaction.results) {
      outcomes.set(wire, { ...result, remoteMta });
      if (delivered && isRecipientLimit(result)) limited.push(wire);
    }
    waiting = [...limited, ...waiting];
  }
  return finish({ state: "usable" }, needsReset);
}

/** The replies of one transaction, by wire recipient, and whether the next one needs RSET first. */
interface TransactionOutcome {
  results: Map<string, DeliveryResult>;
  needsReset: boolean;
}

/**
 * Runs one transaction: MAIL FROM, RCPT TO for each of `to`, DATA. Throws
 * LocalFailure or ConnectionFailure when it ended without replies.
 */
async function sendTransaction(connection: SmtpClient, plan: EnvelopePlan, to: string[], job: Job): Promise<TransactionOutcome> {
  const body = await openMessage(job.message);
  const aliases = aliasEnvelope(plan.from, to);
  for (const [alias, address] of aliases.real) connection.envelopeAliases.set(alias, address);
  connection.requireSmtpUtf8 = plan.smtpUtf8;
  const envelope = { from: aliases.from, to: aliases.to, use8BitMime: job.eightBit || job.body8BitMime };
  try {
    return await new Promise<TransactionOutcome>((resolve, reject) => {
      connection.send(envelope, body, (error: SmtpError | null, info?: SMTPConnectionSendInfo) => {
        if (!Buffer.isBuffer(body)) body.destroy();
        if (!error && info) {
          resolve({ results: sentResults(to, aliases.wireOf, info), needsReset: false });
          return;
        }
        const failure = error!;
        if (!failure.responseCode) {
          reject(classify(failure));
          return;
        }
        const results = refusedResults(to, aliases.wireOf, failure);
        resolve({ results, needsReset: [...results.values()].every((result) => result.code >= 400) });
      });
    });
  } finally {
    connection.envelopeAliases.clear();
    connection.requireSmtpUtf8 = false;
  }
}

/** Returns the results of a transaction whose message the server took: its reply, or a recipient's own refusal. */
function sentResults(to: string[], wireOf: Map<string, string>, info: SMTPConnectionSendInfo): Map<string, DeliveryResult> {
  const refused = new Map<string, SmtpError>();
  for (const item of (info.rejectedErrors ?? []) as SmtpError[]) {
    if (item.recipient) refused.set(wireOf.get(item.recipient) ?? item.recipient, item);
  }
  const code = Number(/^(\d{3})/.exec(info.response)?.[1] ?? 250);
  return new Map(
    to.map((wire) => {
      const refusal = refused.get(wire);
      if (refusal) return [wire, replyResult(wire, refusal.responseCode ?? 550, refusal.response ?? refusal.message)];
      return [wire, replyResult(wire, code, info.response)];
    }),
  );
}

/** Returns the results of a transaction that a reply ended before the message was taken. */
function refusedResults(to: string[], wireOf: Map<string, string>, failure: SmtpError): Map<string, DeliveryResult> {
  const perRecipient = new Map<string, SmtpError>();
  for (const item of failure.rejectedErrors ?? []) {
    if (item.recipient) perRecipient.set(wireOf.get(item.recipient) ?? item.recipient, item);
  }
  return new Map(
    to.map((wire) => {
      const own = perRecipient.get(wire) ?? failure;
      return [wire, replyResult(wire, own.responseCode ?? failure.responseCode!, own.response ?? own.message)];
    }),
  );
}

function replyResult(recipient: string, code: number, response: string): DeliveryResult {
  return { recipient, code, enhanced: enhancedOf(code, response), response: response.trim() };
}

/**
 * Sorts an error without a reply from nodemailer's send: ESTREAM (the
 * queue file could not be read while the message was sent) leaves the
 * connection in DATA; EENVELOPE and EMESSAGE from the API are found before
 * any command is sent. The rest (a closed socket, a timeout) are the
 * connection's.
 */
function classify(error: SmtpError): LocalFailure | ConnectionFailure {
  if (error.code === "ESTREAM") return new LocalFailure(`reading the queued message failed: ${error.message}`, false);
  if (error.command === "API" && (error.code === "EENVELOPE" || error.code === "EMESSAGE")) {
    return new LocalFailure(`the SMTP client rejected the message: ${error.message}`, true);
  }
  return new ConnectionFailure(error.message);
}

/** nodemailer rejects an envelope address with one of these, whatever RFC 5321 allows in a quoted local part. */
const REJECTED_BY_CLIENT = /[<>]/;

/**
 * Returns the envelope to give nodemailer: each address that it would reject
 * replaced by an alias (see SmtpClient), with the map back to the real one.
 */
function aliasEnvelope(
  from: string | false,
  to: string[],
): { from: string | false; to: string[]; real: Map<string, string>; wireOf: Map<string, string> } {
  const real = new Map<string, string>();
  // Drawn only when an address needs an alias, which few messages do.
  let token: string | undefined;
  const alias = (address: string) => {
    if (!REJECTED_BY_CLIENT.test(address)) return address;
    token ??= randomBytes(6).toString("hex");
    const name = `mailroom-alias-${token}-${real.size}@alias.invalid`;
    real.set(name, address);
    return name;
  };
  const aliasedFrom = from === false ? false : alias(from);
  const aliasedTo = to.map(alias);
  const wireOf = new Map(aliasedTo.map((name, index) => [name, to[index]!]));
  return { from: aliasedFrom, to: aliasedTo, real, wireOf };
}

/**
 * Opens the message for sending. A queue file is first checked against the
 * size its state line records. The stream then fails, which aborts DATA,
 * if the file yields another number of octets, so a damaged file is never
 * sent as a complete message. Throws LocalFailure when the file cannot be
 * opened or has the wrong size.
 */
async function openMessage(message: Buffer | MessageLocation): Promise<Buffer | Readable> {
  if (Buffer.isBuffer(message)) return message;
  let handle: FileHandle | undefined;
  let expected: number;
  try {
    handle = await open(message.path, "r");
    const available = (await handle.stat()).size - message.start;
    expected = message.size ?? available;
    if (available !== expected) {
      throw new Error(`its message has ${available} octets, but its state line records ${expected}`);
    }
  } catch (error) {
    await handle?.close().catch(() => undefined);
    throw new LocalFailure(`queue file ${message.path} could not be read: ${(error as Error).message}`, true);
  }
  const source = handle.createReadStream({
    start: message.start,
    ...(expected > 0 ? { end: message.start + expected - 1 } : {}),
    highWaterMark: 256 * 1024,
  });
  let counted = 0;
  const checked = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      counted += chunk.length;
      callback(null, chunk);
    },
    flush(callback) {
      callback(counted === expected ? null : new Error(`queue file ${message.path} yielded ${counted} of ${expected} message octets`));
    },
  });
  // The send callback may come first (a broken connection); a later stream error then has no other listener.
  checked.on("error", () => undefined);
  pipeline(source, checked, () => undefined);
  return checked;
}
