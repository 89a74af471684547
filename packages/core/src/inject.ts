import { Readable } from "node:stream";
import type { Logger } from "pino";
import type { ServerConfig } from "./config/schema.js";
import { storeMessage } from "./data.js";
import type { MemoryBudget } from "./message/spool.js";
import type { HookRunner } from "./plugins/runner.js";
import { runRcpt } from "./recipients.js";
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
 * Settings for storing injected messages, cached per server config. They
 * are the server's, without the size and line length limits, because the
 * server wrote the message itself. Bare line ends are rewritten to CRLF.
 */
const injectorConfigs = new WeakMap<ServerConfig, ServerConfig>();

function injectorConfig(config: ServerConfig): ServerConfig {
  let derived = injectorConfigs.get(config);
  if (!derived) {
    derived = {
      ...config,
      lineEndings: "normalize",
      limits: { ...config.limits, maxMessageSize: Number.MAX_SAFE_INTEGER, maxDataLineLength: Number.MAX_SAFE_INTEGER },
    };
    injectorConfigs.set(config, derived);
  }
  return derived;
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
      const content = typeof input.content === "string" ? Buffer.from(input.content, "utf8") : input.content;
      const utf8 = needsSmtpUtf8(input, content);
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

      const result = await storeMessage(
        {
          connection,
          transaction,
          runner,
          config: injectorConfig(config),
          spoolDir: env.spoolDir,
          memory: env.memory,
          utf8,
        },
        () => Readable.from([content], { objectMode: false }),
      );
      const { reply } = result;
      return {
        stored: reply.code >= 200 && reply.code < 300,
        code: reply.code,
        enhanced: reply.enhanced,
        message: reply.message,
        accepted: transaction.recipients.map((recipient) => recipient.address.address),
        refused,
      };
    },
  };
}

/**
 * True when an injected message needs SMTPUTF8 (RFC 6531), as a client
 * would declare it on MAIL FROM: an envelope address or the header block
 * has non-ASCII characters.
 */
function needsSmtpUtf8(input: InjectedMessage, content: Buffer): boolean {
  const nonAscii = /[^\x00-\x7f]/;
  if (nonAscii.test(input.sender) || input.recipients.some((recipient) => nonAscii.test(recipient))) return true;
  return headerBlockHasNonAscii(content);
}

/**
 * Checks the header block of a message for octets outside US-ASCII. The
 * block ends at the first empty line, and CRLF, a bare LF and a bare CR
 * each end a line, as in the "normalize" mode that the injector stores with.
 */
function headerBlockHasNonAscii(content: Buffer): boolean {
  let lineStart = 0;
  for (let index = 0; index < content.length; index++) {
    const octet = content[index]!;
    if (octet >= 0x80) return true;
    if (octet !== 0x0a && octet !== 0x0d) continue;
    if (index === lineStart) return false;
    if (octet === 0x0d && content[index + 1] === 0x0a) index += 1;
    lineStart = index + 1;
  }
  return false;
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
