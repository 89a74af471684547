import { randomBytes } from "node:crypto";
import type { LevelWithSilent, Logger } from "pino";
import type { Address, Parameters } from "./smtp/address.js";
import type { Message } from "./message/message.js";

const RANDOM_POOL_BYTES = 4608;
let randomPool = Buffer.alloc(0);
let randomOffset = 0;

/**
 * Returns `bytes` random bytes as text. The bytes come from a pool refilled
 * in batches, because a randomBytes call for each id cost about 15 µs of
 * CPU in profiles under load.
 */
export function pooledRandom(bytes: number, encoding: "hex" | "base64url"): string {
  if (randomOffset + bytes > randomPool.length) {
    randomPool = randomBytes(Math.max(RANDOM_POOL_BYTES, bytes));
    randomOffset = 0;
  }
  const text = randomPool.toString(encoding, randomOffset, randomOffset + bytes);
  randomOffset += bytes;
  return text;
}

/** Creates a short random id (12 base64url characters) for connections and transactions. */
export function newId(): string {
  return pooledRandom(9, "base64url");
}

/** TLS facts of a connection. */
export interface TlsState {
  secure: boolean;
  cipher?: string;
  protocol?: string;
  servername?: string;
}

/** A recipient accepted at rcpt, with the route that stores it. */
export interface Recipient {
  address: Address;
  params: Parameters;
  /** The route named by the plugin that accepted it, for example `maildir`. */
  route?: string;
  /** The plugin that accepted the recipient. */
  acceptedBy?: string;
}

/**
 * One SMTP session. The engine owns it; plugins read its facts and may keep
 * their own data in `notes`. Facts set by one plugin for the others
 * (`relaying`) are plain fields.
 */
export class Connection {
  readonly id = newId();
  readonly startedAt = Date.now();
  /** Remote IP address as reported by the socket or the PROXY header. */
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** Host name of the client from reverse DNS, when that lookup is enabled. */
  remoteHostname: string | undefined;
  tls: TlsState;
  /** Name from the last HELO or EHLO, cleared after STARTTLS. */
  heloName: string | undefined;
  heloVerb: "HELO" | "EHLO" | undefined;
  /** Authenticated user, set after a successful AUTH. */
  user: string | undefined;
  /** True when the client may send to any domain (trusted network or authenticated). */
  relaying = false;
  /** Unknown-user results of VRFY and RCPT on this connection. */
  failedLookups = 0;
  /** Count of transactions that reached the end of DATA. */
  transactionCount = 0;
  /** Free-form data for plugins, kept for the whole connection. */
  readonly notes: Record<string, unknown> = {};
  /** The open transaction, between MAIL and the end of DATA or RSET. */
  transaction: Transaction | undefined;
  private readonly parentLogger: Logger;
  private childLogger: Logger | undefined;
  /** Made on first use of `signal`, because most sessions never read it. */
  private goneController: AbortController | undefined;
  private gone = false;

  constructor(init: {
    remoteAddress: string;
    remotePort: number;
    localAddress: string;
    localPort: number;
    secure: boolean;
    logger: Logger;
  }) {
    this.remoteAddress = init.remoteAddress;
    this.remotePort = init.remotePort;
    this.localAddress = init.localAddress;
    this.localPort = init.localPort;
    this.remoteHostname = undefined;
    this.tls = { secure: init.secure };
    this.heloName = undefined;
    this.heloVerb = undefined;
    this.user = undefined;
    this.transaction = undefined;
    this.parentLogger = init.logger;
  }

  /** The connection's logger, with its id bound as `conn`; made on first use. */
  get logger(): Logger {
    return (this.childLogger ??= this.parentLogger.child({ conn: this.id }));
  }

  /** Checks whether the logger writes `level`, without making the child logger. */
  logs(level: LevelWithSilent): boolean {
    return (this.childLogger ?? this.parentLogger).isLevelEnabled(level);
  }

  /**
   * Aborted when the client has gone: the socket closed, or the client ended
   * its input while the engine still works on its last command. The engine
   * still writes the reply to that command while the socket stays writable,
   * so use the signal only to skip work that just the client waits for, such
   * as a failure delay or a queued password check.
   */
  get signal(): AbortSignal {
    if (!this.goneController) {
      this.goneController = new AbortController();
      if (this.gone) this.goneController.abort();
    }
    return this.goneController.signal;
  }

  /** Aborts `signal`; the engine calls it once the client has gone. */
  markGone(): void {
    if (this.gone) return;
    this.gone = true;
    this.goneController?.abort();
  }
}

/** One mail transaction: MAIL, its RCPTs and the message. */
export class Transaction {
  readonly id: string;
  readonly startedAt = Date.now();
  /** Envelope sender; null for the null reverse-path `<>`. */
  readonly sender: Address | null;
  readonly senderParams: Parameters;
  readonly recipients: Recipient[] = [];
  /** The message, set once DATA is complete (from data_post on). */
  message: Message | undefined;
  readonly notes: Record<string, unknown> = {};
  private readonly connection: Connection;
  private childLogger: Logger | undefined;

  constructor(
    connection: Connection,
    sender: Address | null,
    senderParams: Parameters,
  ) {
    this.id = `${connection.id}.${connection.transactionCount + 1}`;
    this.sender = sender;
    this.senderParams = senderParams;
    this.connection = connection;
  }

  /** The transaction's logger, with its id bound as `txn`; made on first use. */
  get logger(): Logger {
    return (this.childLogger ??= this.connection.logger.child({ txn: this.id }));
  }

  /** Checks whether the logger writes `level`, without making the child logger. */
  logs(level: LevelWithSilent): boolean {
    return this.childLogger ? this.childLogger.isLevelEnabled(level) : this.connection.logs(level);
  }
}
