import net from "node:net";
import type { RecipientResult } from "@mailroom/core";
import type { Hop } from "./routing.js";
import {
  ConnectionFailure,
  enhancedOf,
  sendMessage,
  type DeliveryResult,
  type Job,
  type MessageLimits,
  type MessageOutcome,
  type SmtpError,
} from "./send-message.js";
import { SmtpClient } from "./smtp-client.js";

export { ConnectionFailure, enhancedOf, type DeliveryResult, type Job } from "./send-message.js";

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

export interface ClientSettings extends MessageLimits {
  heloName: string;
  timeouts: { connect: number; greeting: number; socket: number };
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
  connection.watchReplies(settings.timeouts.socket);
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
 * address. A failure on this side that leaves a connection unusable ends
 * that job only, and the other jobs go over a new connection to the same
 * address. `beforeSend` (the deliver hook) may return a job's results
 * instead. When no address is left, the jobs not sent and the rest of the
 * run get the result of the last failure (see connectionResult).
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
    for (let index = 0; index < hop.addresses.length; index++) {
      const address = hop.addresses[index]!;
      lastHost = { name: hop.name, address };
      let connection: SmtpClient;
      try {
        connection = await openConnection(hop, address, settings);
      } catch (error) {
        lastFailure = error instanceof ConnectionFailure ? error : new ConnectionFailure(String(error));
        continue;
      }
      const outcome = await sendJobs(connection, hop, address, unsent, source, settings, beforeSend, onResults);
      if (outcome.kind === "broken") {
        lastFailure = outcome.failure;
        connection.close();
        continue;
      }
      if (outcome.kind === "reopen") {
        connection.close();
        // Each reopen follows a job that got its results, so this ends.
        if (unsent.length === 0) {
          const next = await source.next();
          if (!next) return;
          unsent.push(next);
        }
        index -= 1;
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
 * defers with 4.4.1 and names the host and address in its text, with no
 * remoteMta because no host replied. A reply is kept as the remote sent it,
 * with the host in remoteMta: 4xx defers, a 5xx greeting or AUTH refusal
 * defers with its enhanced code's class made 4 (as Postfix does), and
 * another 5xx (to EHLO, say) bounces.
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
    return { recipient, code: 0, enhanced: "4.4.1", response: `${host.name} [${host.address}]: ${failure.message}` };
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
  | { kind: "broken"; failure: ConnectionFailure }
  /** A failure on this side left the connection unusable; the other jobs may go over a new one. */
  | { kind: "reopen" };

/**
 * Sends `unsent`, then the jobs of the source, over one connection. A
 * transaction refused for every recipient is followed by RSET before the
 * next one; a failed RSET breaks the connection.
 */
async function sendJobs(
  connection: SmtpClient,
  hop: Hop,
  address: string,
  unsent: Job[],
  source: JobSource,
  limits: MessageLimits,
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
      let outcome: MessageOutcome;
      try {
        outcome = await sendMessage(connection, job, { name: hop.name, address }, limits, needsReset);
      } catch (error) {
        unsent.unshift(job);
        return { kind: "broken", failure: error instanceof ConnectionFailure ? error : new ConnectionFailure(String(error)) };
      }
      onResults(job, outcome.results);
      needsReset = outcome.needsReset;
      if (outcome.connection.state === "broken") return { kind: "broken", failure: outcome.connection.failure };
      if (outcome.connection.state === "unusable") return { kind: "reopen" };
    }
  } finally {
    connection.removeListener("end", onEnd);
  }
}
