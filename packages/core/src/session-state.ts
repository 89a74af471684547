import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Address, Parameters } from "./smtp/address.js";
import type { Message } from "./message/message.js";

/** Creates a short random id for connections and transactions. */
export function newId(): string {
  return randomBytes(9).toString("base64url");
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
  readonly logger: Logger;

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
    this.logger = init.logger.child({ conn: this.id });
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
  readonly logger: Logger;

  constructor(
    connection: Connection,
    sender: Address | null,
    senderParams: Parameters,
  ) {
    this.id = `${connection.id}.${connection.transactionCount + 1}`;
    this.sender = sender;
    this.senderParams = senderParams;
    this.logger = connection.logger.child({ txn: this.id });
  }
}
