import type { Readable } from "node:stream";
import type { ServerConfig } from "./config/schema.js";
import { errorCode } from "./logging.js";
import { Message, wrapHeaders } from "./message/message.js";
import { receivedHeader } from "./message/received.js";
import { SpoolWriter, type MemoryBudget } from "./message/spool.js";
import type { HookOutcome, HookRunner } from "./plugins/runner.js";
import { replyFor, replyForOutcome, type Reply } from "./replies.js";
import { storeRoutes, type MessageVerdict } from "./store-routes.js";
import type { Connection, Transaction } from "./session-state.js";
import type { Wire } from "./smtp/adapter.js";

/** A message with more Received headers than this is taken to be looping. */
export const MAX_RECEIVED_HEADERS = 100;

/** The inputs of storeMessage: the session, the plugin set and the server settings. */
export interface MessageContext {
  connection: Connection;
  transaction: Transaction;
  runner: HookRunner;
  config: ServerConfig;
  spoolDir: string;
  memory: MemoryBudget;
  /** The transaction was opened with SMTPUTF8. */
  utf8: boolean;
  /**
   * The decision the queue handlers get as `accepted`. A session passes its
   * own, so that the server's shutdown deadline can reject the message
   * before the client reads 421; a rejected verdict stops the queue calls.
   */
  verdict?: MessageVerdict;
}

interface ReceiveContext extends MessageContext {
  wire: Wire;
}

/** The final reply to a message, and the plugin outcome that decided it. */
export interface DataResult {
  reply: Reply;
  /**
   * The hook whose outcome decided the reply: data_post when a plugin
   * refused the message there or failed, queue otherwise. Undefined when
   * the engine refused the message before data_post (size, line length,
   * line endings, a mail loop, a storage or connection failure), or when the
   * server's shutdown deadline rejected it.
   */
  hook: "data_post" | "queue" | undefined;
  /**
   * The outcome of that hook: at data_post the refusal or error, at queue
   * the answer of the route owner that did not store the message. Undefined
   * when every route stored it, or when no plugin owns a recipient's route.
   */
  outcome: HookOutcome | undefined;
  /** At queue, the route that was not stored. */
  route?: string;
}

/**
 * Decides whether DATA may go on to 354: 554 5.5.1 when the transaction has
 * no accepted recipient, else the reply of the data hook's outcome. A null
 * reply means go on.
 */
export async function runDataHook(
  context: Pick<MessageContext, "connection" | "transaction" | "runner">,
): Promise<{ reply: Reply | null; outcome: HookOutcome | undefined }> {
  const { connection, transaction, runner } = context;
  if (transaction.recipients.length === 0) {
    return { reply: { code: 554, enhanced: "5.5.1", message: "No valid recipients" }, outcome: undefined };
  }
  const outcome = await runner.run("data", { connection, transaction }, transaction);
  return { reply: replyForOutcome("data", outcome), outcome };
}

/**
 * Receives DATA after the data hook allowed it: sends 354, spools the
 * message, checks it, runs data_post and queue, and returns the final reply.
 * The spool file is removed before this returns.
 */
export async function receiveMessage(context: ReceiveContext): Promise<Reply> {
  const { wire } = context;
  wire.reply({ code: 354, message: "End data with <CR><LF>.<CR><LF>" });
  // Throws when the client left before DATA started; storeMessage turns that into the reply.
  const result = await storeMessage(context, () => wire.startData());
  return result.reply;
}

/**
 * Reads a message from the stream that `open` returns, spools and checks
 * it against `server.limits` and `server.lineEndings`, runs data_post and
 * the queue hook of each route's owner, logs the transaction and returns
 * the final reply, which names the transaction id after a 250. The spool
 * file is removed before this returns; a message kept in memory stays
 * readable through `transaction.message`.
 */
export async function storeMessage(context: MessageContext, open: () => Readable): Promise<DataResult> {
  const { transaction, config } = context;
  const limits = config.limits;
  const started = Date.now();

  const spool = new SpoolWriter({
    dir: context.spoolDir,
    // The pid lets a starting server remove the files of a killed one.
    name: `${process.pid}-${transaction.id}.eml`,
    maxSize: limits.maxMessageSize,
    maxLineLength: limits.maxDataLineLength,
    lineEndings: config.lineEndings,
    memory: context.memory,
  });

  let result: DataResult;
  try {
    result = await receiveAndStore(context, open(), spool);
  } catch (error) {
    const code = errorCode(error);
    // A client that leaves in the middle of DATA is routine, not a server error.
    if (code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ECONNECTION") {
      transaction.logger.info({ reason: (error as Error).message }, "client left during DATA");
    } else {
      transaction.logger.error({ err: error }, "message not received");
    }
    // A full spool file system is a storage problem the client can wait out.
    const reply =
      code === "ENOSPC" || code === "EDQUOT"
        ? { code: 452, enhanced: "4.3.1", message: "Insufficient system storage" }
        : { code: 451, enhanced: "4.3.0", message: "Temporary local problem, try again later" };
    result = { reply, hook: undefined, outcome: undefined };
  } finally {
    await spool.remove().catch((error: unknown) => {
      transaction.logger.warn({ err: error, path: spool.path }, "spool file not removed");
    });
  }

  const { reply } = result;
  if (transaction.logs("info")) {
    transaction.logger.info(
      {
        sender: transaction.sender?.address ?? "",
        recipients: transaction.recipients.length,
        size: transaction.message?.size,
        code: reply.code,
        enhanced: reply.enhanced,
        ms: Date.now() - started,
      },
      "transaction",
    );
  }
  if (reply.code === 250) result = { ...result, reply: { ...reply, message: `${reply.message} as ${transaction.id}` } };
  return result;
}

/**
 * Feeds the DATA stream into the spool until its end, pausing the stream
 * while the spool file drains. A storage error is reported after the final
 * dot, so the client reads the reply in step. Rejects when the stream fails
 * or closes early, and with code DATA_TIMEOUT when no bytes arrived for
 * `timeout` ms. That inactivity timer restarts with each chunk and stops
 * while the spool drains, because then the server, not the client, delays
 * the transfer.
 */
function readInto(input: Readable, spool: SpoolWriter, timeout: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    let failure: Error | undefined;
    let timer: NodeJS.Timeout;
    const settle = (error?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      input.off("data", onData);
      if (error) reject(error);
      else resolve();
    };
    const onTimeout = () => {
      const error = Object.assign(new Error("DATA timed out"), { code: "DATA_TIMEOUT" });
      settle(error);
      input.destroy(error);
    };
    const startTimer = () => {
      timer = setTimeout(onTimeout, timeout);
      timer.unref();
    };
    // Runs once the spool has drained: the timer was cleared for the wait, so it starts anew.
    const continueReading = () => {
      if (!settled) startTimer();
      input.resume();
    };
    const fail = (error: Error) => {
      failure ??= error;
    };
    const onData = (chunk: Buffer) => {
      // Restarting the running timer spares a new Timeout object per chunk.
      timer.refresh();
      // After a storage error the rest of the message is read and dropped.
      if (failure) return;
      let wait: Promise<void> | undefined;
      try {
        wait = spool.write(chunk);
      } catch (error) {
        return fail(error as Error);
      }
      if (!wait) return;
      input.pause();
      clearTimeout(timer);
      wait.then(continueReading, (error: Error) => {
        fail(error);
        continueReading();
      });
    };
    startTimer();
    input.on("data", onData);
    input.once("end", () => settle(failure));
    input.once("error", (error) => settle(error));
    input.once("close", () => {
      if (!input.readableEnded) {
        settle(Object.assign(new Error("connection closed during DATA"), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
      }
    });
  });
}

async function receiveAndStore(context: MessageContext, input: Readable, spool: SpoolWriter): Promise<DataResult> {
  const { connection, transaction, config } = context;
  const refused = (reply: Reply): DataResult => ({ reply, hook: undefined, outcome: undefined });

  try {
    await readInto(input, spool, config.limits.dataTimeout);
  } catch (error) {
    if (errorCode(error) === "DATA_TIMEOUT") {
      return refused({ code: 421, enhanced: "4.4.2", message: "DATA timed out, closing connection", close: true });
    }
    throw error;
  }

  const result = await spool.finish();
  if (result.tooBig) {
    return refused({ code: 552, enhanced: "5.3.4", message: `Message size exceeds the limit of ${config.limits.maxMessageSize} octets` });
  }
  if (result.lineTooLong) {
    return refused({ code: 500, enhanced: "5.5.2", message: `Message line longer than ${config.limits.maxDataLineLength} octets` });
  }
  if (result.bareLineEnding && config.lineEndings === "strict") {
    return refused({ code: 554, enhanced: "5.6.0", message: "Message contains a bare CR or LF; lines must end with CRLF" });
  }

  const headers = wrapHeaders(result.headers);
  if (headers.count("received") > MAX_RECEIVED_HEADERS) {
    return refused({ code: 554, enhanced: "5.4.6", message: "Too many Received headers: mail loop" });
  }

  const message = new Message(
    result.body,
    result.size,
    headers,
    receivedHeader({ connection, transaction, hostname: config.hostname, utf8: context.utf8 }),
    transaction.sender,
  );
  transaction.message = message;

  const post = await context.runner.run("data_post", { connection, transaction, message }, transaction);
  const postReply = replyForOutcome("data_post", post);
  if (postReply) return { reply: postReply, hook: "data_post", outcome: post };
  return queueMessage(context, message);
}

/**
 * Calls the queue handler of each route's owner with its recipients. The
 * reply is 250 only when every owner answered OK, which for the stock
 * plugins means the message is fsync'd.
 */
async function queueMessage(
  context: Pick<MessageContext, "connection" | "transaction" | "runner" | "verdict">,
  message: Message,
): Promise<DataResult> {
  const { connection, transaction, runner } = context;
  const result = await storeRoutes(runner, { connection, transaction, message }, transaction, context.verdict);
  if (result.kind === "stored") return { reply: replyFor("queue", { verdict: "OK" })!, hook: "queue", outcome: undefined };
  if (result.kind === "rejected") {
    return { reply: { code: 421, enhanced: "4.3.2", message: "Server shutting down", close: true }, hook: undefined, outcome: undefined };
  }

  const { route, outcome } = result;
  if (!outcome) {
    transaction.logger.error(
      {
        route: route || null,
        recipients: transaction.recipients.filter((recipient) => (recipient.route ?? "") === route).map((recipient) => recipient.address.address),
      },
      "no plugin stores this route",
    );
    return { reply: { code: 451, enhanced: "4.3.0", message: "Message not stored, try again later" }, hook: "queue", outcome: undefined, route };
  }
  return { reply: replyForOutcome("queue", outcome)!, hook: "queue", outcome, route };
}
