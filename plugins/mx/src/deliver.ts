import { createReadStream } from "node:fs";
import net from "node:net";
import type { SMTPConnectionSendInfo } from "nodemailer/lib/smtp-connection";
import type { RecipientResult } from "@mailroom/core";
import { planEnvelope, type Utf8Need } from "./international.js";
import type { Hop } from "./routing.js";
import { SmtpClient } from "./smtp-client.js";
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
}

/**
 * The jobs of one delivery run, handed out one at a time so that messages
 * queued while the run is under way can still go over its connection.
 */
export interface JobSource {
  /** Returns the next job, waiting briefly for one; undefined ends the run. */
  next(): Promise<Job | undefined>;
  /** Returns the jobs the run would still take, without waiting, for a failure that covers them all. */
  rest(): Promise<Job[]>;
  /** Gives a job back unsent, for a later run. */
  putBack(job: Job): void;
}

/**
 * The result of delivering to one recipient. `temporary` marks a 5xx reply
 * that defers the recipient instead of bouncing it (see isTemporaryRefusal).
 */
export interface DeliveryResult extends RecipientResult {
  temporary?: boolean;
}

export interface ClientSettings {
  heloName: string;
  timeouts: { connect: number; greeting: number; socket: number };
}

type SmtpError = Error & {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
};

const ENHANCED = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/;

/** Reads the enhanced status code of a reply, or derives a generic one from its class. */
export function enhancedOf(code: number, response: string): string {
  const match = ENHANCED.exec(response);
  if (match) return match[1]!;
  if (code >= 500) return "5.0.0";
  if (code >= 400) return "4.0.0";
  return "2.0.0";
}

function result(recipient: string, code: number, response: string, remoteMta: string): RecipientResult {
  return { recipient, code, enhanced: enhancedOf(code, response), response: response.trim(), remoteMta };
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
 * True for a connection-level 5xx reply that defers instead of bouncing: the
 * greeting (nodemailer also files a reply outside any command under CONN),
 * a rejected AUTH and a refused STARTTLS. A 5xx greeting reports the state of
 * one site, not the fate of the message, and a rejected AUTH is a fault in
 * this server's credentials. Postfix defers both by default (postconf(5):
 * smtp_skip_5xx_greeting and smtp_sasl_auth_soft_bounce are yes). A refused
 * STARTTLS where TLS is required is a TLS failure, which defers like the rest.
 */
function isTemporaryRefusal(failure: ConnectionFailure): boolean {
  return failure.command === "CONN" || failure.command.startsWith("AUTH") || failure.command === "STARTTLS";
}

function connectOnce(hop: Hop, address: string, settings: ClientSettings, plaintext: boolean): Promise<SmtpClient> {
  const connection = new SmtpClient({
    host: address,
    port: hop.port,
    name: settings.heloName,
    ...(net.isIP(hop.name) ? {} : { servername: hop.name }),
    ignoreTLS: plaintext || hop.tls === "none",
    requireTLS: hop.tls === "required",
    opportunisticTLS: hop.tls === "opportunistic",
    connectionTimeout: settings.timeouts.connect,
    greetingTimeout: settings.timeouts.greeting,
    socketTimeout: settings.timeouts.socket,
    tls: {
      rejectUnauthorized: hop.verify,
      ...(net.isIP(hop.name) ? {} : { servername: hop.name }),
    },
    logger: false,
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    connection.on("error", (error: SmtpError) => {
      if (settled) return;
      settled = true;
      // A failed handshake surfaces as ETLS or as a socket error while upgrading.
      const duringTls = error.code === "ETLS" || connection.upgrading === true;
      connection.close();
      reject(Object.assign(error, { duringTls }));
    });
    connection.connect(() => {
      settled = true;
      resolve(connection);
    });
  });
}

/**
 * Opens a connection to one address: EHLO, STARTTLS as the hop asks, then
 * AUTH when configured. An opportunistic STARTTLS whose handshake fails is
 * retried in plaintext on a new connection.
 */
export async function openConnection(hop: Hop, address: string, settings: ClientSettings): Promise<SmtpClient> {
  let connection: SmtpClient;
  try {
    connection = await connectOnce(hop, address, settings, false);
  } catch (error) {
    const smtp = error as SmtpError;
    if ((smtp as { duringTls?: boolean }).duringTls && hop.tls === "opportunistic") {
      try {
        connection = await connectOnce(hop, address, settings, true);
      } catch (retryError) {
        throw asFailure(retryError as SmtpError);
      }
    } else {
      throw asFailure(smtp);
    }
  }
  if (hop.auth) {
    const auth = hop.auth;
    if (!connection.secure && hop.tls !== "none") {
      connection.close();
      throw new ConnectionFailure(`${hop.name} offered no working TLS; credentials are not sent in plaintext`);
    }
    await new Promise<void>((resolve, reject) => {
      connection.login({ user: auth.user, pass: auth.pass }, (error) => {
        if (error) {
          connection.close();
          reject(asFailure(error as SmtpError));
        } else resolve();
      });
    });
  }
  return connection;
}

function asFailure(error: SmtpError): ConnectionFailure {
  return new ConnectionFailure(error.message, error.responseCode ?? 0, error.response ?? "", error.command ?? "");
}

const UTF8_NEEDS: Record<Utf8Need, string> = {
  sender: "the non-ASCII local part of the sender",
  recipient: "the non-ASCII local part of the recipient",
  headers: "the UTF-8 header fields of the message",
};

/** Returns the result of a recipient that the server cannot take because it does not offer SMTPUTF8. */
function smtpUtf8Refusal(recipient: string, need: Utf8Need, remoteMta: string): RecipientResult {
  return {
    recipient,
    code: 550,
    enhanced: "5.6.7",
    response: `${remoteMta} does not offer SMTPUTF8 (RFC 6531), which is needed for ${UTF8_NEEDS[need]}`,
    remoteMta,
  };
}

/**
 * Sends one message over an open connection and returns a result per
 * recipient, and whether a transaction was started. Domains of addresses
 * with an ASCII local part go as A-labels. A message that needs SMTPUTF8
 * goes with it, or, when the server does not offer it, is not sent to the
 * recipients concerned, which get 5.6.7 (RFC 6531 section 3.2). Throws
 * ConnectionFailure when the connection broke before a reply, so the caller
 * can try another address.
 */
export async function sendOne(connection: SmtpClient, job: Job, remoteMta: string): Promise<{ results: RecipientResult[]; sent: boolean }> {
  const plan = planEnvelope(job, connection.offers("SMTPUTF8"));
  const results = plan.refused.map(({ recipient, need }) => smtpUtf8Refusal(recipient, need, remoteMta));
  if (plan.to.length === 0) return { results, sent: false };
  connection.requireSmtpUtf8 = plan.smtpUtf8;
  let outcomes: Map<string, RecipientResult>;
  try {
    outcomes = await sendEnvelope(connection, plan.from, plan.to, job.message, remoteMta);
  } finally {
    connection.requireSmtpUtf8 = false;
  }
  for (const [wire, recipients] of plan.recipientsOf) {
    const outcome = outcomes.get(wire)!;
    for (const recipient of recipients) results.push({ ...outcome, recipient });
  }
  return { results, sent: true };
}

/** Sends the message with the given envelope and returns a result per wire recipient. */
function sendEnvelope(
  connection: SmtpClient,
  from: string | false,
  to: string[],
  message: Buffer | MessageLocation,
  remoteMta: string,
): Promise<Map<string, RecipientResult>> {
  return new Promise((resolve, reject) => {
    const body = Buffer.isBuffer(message) ? message : createReadStream(message.path, { start: message.start, highWaterMark: 256 * 1024 });
    const resultsOf = (outcome: (recipient: string) => RecipientResult) => new Map(to.map((recipient) => [recipient, outcome(recipient)]));
    connection.send({ from, to }, body, (error: SmtpError | null, info?: SMTPConnectionSendInfo) => {
      if (!Buffer.isBuffer(body)) body.destroy();
      if (!error && info) {
        const rejected = new Map<string, SmtpError>();
        for (const item of (info.rejectedErrors ?? []) as SmtpError[]) {
          if (item.recipient) rejected.set(item.recipient, item);
        }
        resolve(
          resultsOf((recipient) => {
            const refusal = rejected.get(recipient);
            if (refusal) return result(recipient, refusal.responseCode ?? 550, refusal.response ?? refusal.message, remoteMta);
            const code = Number(/^(\d{3})/.exec(info.response)?.[1] ?? 250);
            return result(recipient, code, info.response, remoteMta);
          }),
        );
        return;
      }
      const failure = error!;
      if (!failure.responseCode) {
        reject(new ConnectionFailure(failure.message));
        return;
      }
      const perRecipient = new Map<string, SmtpError>();
      for (const item of failure.rejectedErrors ?? []) {
        if (item.recipient) perRecipient.set(item.recipient, item);
      }
      resolve(
        resultsOf((recipient) => {
          const own = perRecipient.get(recipient) ?? failure;
          return result(recipient, own.responseCode ?? failure.responseCode!, own.response ?? own.message, remoteMta);
        }),
      );
    });
  });
}

/** Sends RSET; false when the connection is no longer usable. */
export function resetConnection(connection: SmtpClient): Promise<boolean> {
  return new Promise((resolve) => connection.reset((error) => resolve(!error)));
}

/**
 * Ends the session with QUIT and waits (at most two seconds) for the socket to
 * close, so a connection counts against the limits until it is gone.
 */
export function closeConnection(connection: SmtpClient): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      connection.close();
      resolve();
    }, 2000);
    connection.once("end", () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      connection.quit();
    } catch {
      connection.close();
    }
  });
}

/**
 * Delivers the jobs of one run over the hops in order, starting with `first`:
 * each address of a hop in turn until a connection carries the jobs the
 * source hands out. A job whose connection broke is sent again on the next
 * address. `beforeSend` (the deliver hook) may return a job's results instead.
 * When no address is left, the jobs not sent and the rest of the run get the
 * result of the last failure (see connectionResult).
 */
export async function deliverRun(
  hops: Hop[],
  first: Job,
  source: JobSource,
  settings: ClientSettings,
  beforeSend: (job: Job, hop: Hop, address: string) => Promise<RecipientResult[] | undefined>,
  onResults: (job: Job, results: DeliveryResult[]) => void,
): Promise<void> {
  const unsent: Job[] = [first];
  let lastFailure: ConnectionFailure | undefined;
  let lastHost: { name: string; address: string } | undefined;

  for (const hop of hops) {
    for (const address of hop.addresses) {
      lastHost = { name: hop.name, address };
      let connection: SmtpClient;
      try {
        connection = await openConnection(hop, address, settings);
      } catch (error) {
        lastFailure = error instanceof ConnectionFailure ? error : new ConnectionFailure(String(error));
        continue;
      }
      const outcome = await sendJobs(connection, hop, address, unsent, source, beforeSend, onResults);
      if (outcome.kind === "broken") {
        lastFailure = outcome.failure;
        connection.close();
        continue;
      }
      if (outcome.kind === "closed") connection.close();
      else await closeConnection(connection);
      return;
    }
  }

  for (const job of [...unsent, ...(await source.rest())]) {
    onResults(
      job,
      job.recipients.map((recipient) => connectionResult(recipient, lastFailure, lastHost)),
    );
  }
}

/**
 * Returns the result for a recipient that no address took, from the last
 * host's failure. A failure without a reply (refused, timed out, broken)
 * defers with 4.4.1 and names the host and address. A reply is kept as the
 * remote sent it, with the host in remoteMta: 4xx defers, a 5xx greeting or
 * AUTH refusal defers with its enhanced code's class made 4 (as Postfix
 * does), and another 5xx (to EHLO, say) bounces.
 */
function connectionResult(
  recipient: string,
  failure: ConnectionFailure | undefined,
  host: { name: string; address: string } | undefined,
): DeliveryResult {
  if (!failure || !host) return { recipient, code: 0, enhanced: "4.4.1", response: "no host to connect to" };
  const remoteMta = host.name;
  const reply = failure.response.trim();
  if (failure.code < 400 || reply === "") {
    return { recipient, code: 0, enhanced: "4.4.1", response: `${host.name} [${host.address}]: ${failure.message}`, remoteMta };
  }
  const enhanced = enhancedOf(failure.code, reply);
  if (failure.code >= 500 && isTemporaryRefusal(failure)) {
    return { recipient, code: failure.code, enhanced: `4${enhanced.slice(1)}`, response: reply, remoteMta, temporary: true };
  }
  return { recipient, code: failure.code, enhanced, response: reply, remoteMta };
}

type SendOutcome =
  | { kind: "done" }
  /** The remote closed the connection while it waited for a job (a job taken meanwhile was given back). */
  | { kind: "closed" }
  /** The connection broke, and `unsent` contains the jobs still to send. */
  | { kind: "broken"; failure: ConnectionFailure };

/**
 * Sends `unsent`, then the jobs of the source, over one connection. A
 * transaction refused for every recipient is followed by RSET before the
 * next job; a failed RSET breaks the connection.
 */
async function sendJobs(
  connection: SmtpClient,
  hop: Hop,
  address: string,
  unsent: Job[],
  source: JobSource,
  beforeSend: (job: Job, hop: Hop, address: string) => Promise<RecipientResult[] | undefined>,
  onResults: (job: Job, results: DeliveryResult[]) => void,
): Promise<SendOutcome> {
  let ended = false;
  const onEnd = () => (ended = true);
  connection.once("end", onEnd);
  try {
    let needsReset = false;
    for (;;) {
      const fromSource = unsent.length === 0;
      const job = unsent.shift() ?? (await source.next());
      if (!job) return { kind: ended ? "closed" : "done" };
      if (ended && fromSource) {
        source.putBack(job);
        return { kind: "closed" };
      }
      const answered = await beforeSend(job, hop, address);
      if (answered) {
        onResults(job, answered);
        continue;
      }
      if (needsReset && !(await resetConnection(connection))) {
        unsent.unshift(job);
        return { kind: "broken", failure: new ConnectionFailure(`${hop.name} [${address}] failed RSET`) };
      }
      try {
        const { results, sent } = await sendOne(connection, job, hop.name);
        onResults(job, results);
        if (sent) needsReset = results.every((item) => item.code >= 400);
      } catch (error) {
        unsent.unshift(job);
        return { kind: "broken", failure: error instanceof ConnectionFailure ? error : new ConnectionFailure(String(error)) };
      }
    }
  } finally {
    connection.removeListener("end", onEnd);
  }
}
