import { isAscii } from "node:buffer";
import type { Logger } from "pino";
import type { ServerConfig } from "./config/schema.js";
import { queue } from "./data.js";
import { Message, wrapHeaders } from "./message/message.js";
import { receivedHeader } from "./message/received.js";
import { SpoolWriter, type MemoryBudget } from "./message/spool.js";
import type { HookRunner } from "./plugins/runner.js";
import { runRcpt } from "./recipients.js";
import { replyFor, type Reply } from "./replies.js";
import type { InjectedMessage, InjectResult, MessageInjector } from "./services/tokens.js";
import { Connection, Transaction } from "./session-state.js";
import { parseMailbox } from "./smtp/address.js";

export interface InjectorEnvironment {
  /** The plugin set to run, read at each call so a reload takes effect. */
  runner(): HookRunner;
  config(): ServerConfig;
  spoolDir: string;
  memory: MemoryBudget;
  logger: Logger;
}

/**
 * Builds the MessageInjector: the message runs through rcpt, data_post and
 * queue on a connection from 127.0.0.1 that may relay, as a trusted local
 * submission would. Nothing is sent over a socket.
 */
export function createInjector(env: InjectorEnvironment): MessageInjector {
  return {
    async inject(input: InjectedMessage, logger = env.logger): Promise<InjectResult> {
      const runner = env.runner();
      const config = env.config();
      const connection = new Connection({
        remoteAddress: "127.0.0.1",
        remotePort: 0,
        localAddress: "127.0.0.1",
        localPort: 0,
        secure: false,
        logger,
      });
      connection.heloName = config.hostname;
      connection.heloVerb = "EHLO";
      connection.relaying = true;
      connection.notes.injected = true;

      const sender = input.sender ? parseMailbox(input.sender, true) : null;
      if (sender && "error" in sender) {
        return refusedAll(input, 501, "5.1.7", `Invalid sender address: ${sender.error}`);
      }
      const utf8 = needsSmtpUtf8(input);
      const transaction = new Transaction(connection, sender, utf8 ? { SMTPUTF8: true } : {});
      connection.transaction = transaction;

      const refused: InjectResult["refused"] = [];
      for (const recipient of input.recipients) {
        const address = parseMailbox(recipient, true);
        if ("error" in address) {
          refused.push({ recipient, code: 501, enhanced: "5.1.3", message: address.error });
          continue;
        }
        const { reply, accepted } = await runRcpt({ runner, connection, transaction, address, params: {} });
        if (!accepted) refused.push({ recipient, code: reply.code, enhanced: reply.enhanced, message: reply.message });
      }
      if (transaction.recipients.length === 0) {
        const first = refused[0];
        return { stored: false, code: first?.code ?? 554, enhanced: first?.enhanced ?? "5.5.1", message: first?.message ?? "No recipients", accepted: [], refused };
      }

      const spool = new SpoolWriter({
        dir: env.spoolDir,
        // The pid lets a starting server remove the files of a killed one.
        name: `${process.pid}-${transaction.id}.eml`,
        maxSize: Number.MAX_SAFE_INTEGER,
        maxLineLength: Number.MAX_SAFE_INTEGER,
        lineEndings: "normalize",
        memory: env.memory,
      });
      try {
        await spool.write(Buffer.from(input.content));
        const result = await spool.finish();
        const message = new Message(
          result.body,
          result.size,
          wrapHeaders(result.headers),
          receivedHeader({ connection, transaction, hostname: config.hostname, utf8 }),
          transaction.sender,
        );
        transaction.message = message;
        let reply: Reply | null = null;
        const post = await runner.run("data_post", { connection, transaction, message }, transaction.logger);
        if (post.kind !== "cont") reply = replyFor("data_post", post.kind === "error" ? "ERROR" : post.answer);
        reply ??= await queue({ connection, transaction, runner }, message);
        return {
          stored: reply.code >= 200 && reply.code < 300,
          code: reply.code,
          enhanced: reply.enhanced,
          message: reply.message,
          accepted: transaction.recipients.map((recipient) => recipient.address.address),
          refused,
        };
      } finally {
        await spool.remove().catch(() => undefined);
      }
    },
  };
}

/**
 * True when an injected message needs SMTPUTF8 (RFC 6531), as a client
 * would declare it on MAIL FROM: an envelope address or the header block
 * has non-ASCII characters.
 */
function needsSmtpUtf8(input: InjectedMessage): boolean {
  const nonAscii = /[^\x00-\x7f]/;
  if (nonAscii.test(input.sender) || input.recipients.some((recipient) => nonAscii.test(recipient))) return true;
  const content = typeof input.content === "string" ? Buffer.from(input.content, "utf8") : input.content;
  const end = content.indexOf("\r\n\r\n");
  return !isAscii(end === -1 ? content : content.subarray(0, end));
}

function refusedAll(input: InjectedMessage, code: number, enhanced: string, message: string): InjectResult {
  return {
    stored: false,
    code,
    enhanced,
    message,
    accepted: [],
    refused: input.recipients.map((recipient) => ({ recipient, code, enhanced, message })),
  };
}
