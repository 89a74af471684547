import SMTPConnection from "nodemailer/lib/smtp-connection";

/**
 * Members of nodemailer's SMTPConnection (10.6.1, pinned exactly) that its
 * type declarations leave out: the extensions it read from the EHLO reply,
 * and the method that writes each command line.
 */
interface ConnectionInternals {
  _supportedExtensions?: unknown;
  /** Callbacks for the replies still due, one per reply. */
  _responseActions?: unknown;
  _socket?: { bytesWritten: number };
  /** The timer of the greeting or a STARTTLS upgrade, which nodemailer bounds itself; false or undefined otherwise. */
  _phaseTimer?: unknown;
  _destroyed?: boolean;
  _sendCommand(line: string, logLine?: string): void;
  /** Handles the complete replies received; nodemailer calls it only once a reply's last line has come. */
  _processResponse(): unknown;
  _onError(error: Error, type: string, data: unknown, command: string): void;
}

const internals = SMTPConnection.prototype as unknown as ConnectionInternals;
const baseSendCommand = internals._sendCommand;
const baseProcessResponse = internals._processResponse;
for (const name of ["_sendCommand", "_processResponse", "_onError"] as const) {
  if (typeof internals[name] !== "function") {
    throw new TypeError(`nodemailer's SMTPConnection has no ${name} method; this version is not supported`);
  }
}

/**
 * nodemailer's SMTP client with what plugin-mx needs that its public API
 * lacks. nodemailer adds SMTPUTF8 to MAIL FROM by itself when an envelope
 * address is not ASCII and the server offered it. This class also reports
 * whether the server offered an extension, and adds SMTPUTF8 for a message
 * whose envelope is ASCII but whose header fields are UTF-8 (RFC 6531).
 *
 * nodemailer 10.6.1 also rejects an envelope address that contains "<" or
 * ">" before it sends MAIL FROM, although RFC 5321 allows both in a quoted
 * local part (`"a>b"@example.net`). Such an address is handed to
 * nodemailer as an alias with no such character, and this class writes the
 * real address in its place on the MAIL FROM or RCPT TO line.
 *
 * It also bounds the time a reply may take to arrive in full (watchReplies).
 *
 * The tests of plugin-mx send through all of these, so an upgrade of
 * nodemailer that changes the members they use fails them.
 */
export class SmtpClient extends SMTPConnection {
  /** Makes the next MAIL FROM carry SMTPUTF8 even for an ASCII envelope. Set it only when the server offers SMTPUTF8. */
  requireSmtpUtf8 = false;

  /** Envelope addresses by the alias that stands for them in nodemailer's envelope, for the message being sent. */
  readonly envelopeAliases = new Map<string, string>();

  /** When the client last sent a command or message octets, or got a complete reply (performance.now(), milliseconds). */
  private lastProgress = performance.now();
  private replyWatch: NodeJS.Timeout | undefined;

  /**
   * Fails the connection with ETIMEDOUT when a reply that is due has not
   * come in full within `timeout` milliseconds of the last command or
   * message octet sent. nodemailer's socketTimeout counts only silence, so
   * without this a server that sends a multiline reply one line at a time
   * keeps the connection until the reply reaches nodemailer's size limit
   * of 1 MiB. The greeting and a STARTTLS upgrade keep nodemailer's own
   * deadline (greetingTimeout).
   */
  watchReplies(timeout: number): void {
    if (this.replyWatch) return;
    let written = -1;
    const check = () => {
      const self = this as unknown as ConnectionInternals;
      const actions = self._responseActions;
      if (!Array.isArray(actions)) {
        throw new TypeError("nodemailer's SMTPConnection keeps no _responseActions list; this version is not supported");
      }
      const now = performance.now();
      const bytesWritten = self._socket?.bytesWritten ?? 0;
      if (actions.length === 0 || self._phaseTimer || bytesWritten !== written) this.lastProgress = now;
      written = bytesWritten;
      if (now - this.lastProgress <= timeout || self._destroyed) return;
      this.stopWatchingReplies();
      self._onError(new Error(`no complete reply within ${timeout} ms`), "ETIMEDOUT", false, "CONN");
    };
    check();
    this.replyWatch = setInterval(check, Math.min(Math.max(timeout / 10, 10), 1000));
    this.replyWatch.unref();
    this.once("end", () => this.stopWatchingReplies());
  }

  private stopWatchingReplies(): void {
    clearInterval(this.replyWatch);
    this.replyWatch = undefined;
  }

  _processResponse(): unknown {
    this.lastProgress = performance.now();
    return baseProcessResponse.call(this);
  }

  /** Checks whether the server's EHLO reply offered `keyword`, one of the extensions nodemailer records (SMTPUTF8, 8BITMIME, DSN, PIPELINING, SIZE, REQUIRETLS). */
  offers(keyword: string): boolean {
    const extensions = (this as unknown as ConnectionInternals)._supportedExtensions;
    if (!Array.isArray(extensions)) {
      throw new TypeError("nodemailer's SMTPConnection keeps no _supportedExtensions list; this version is not supported");
    }
    return extensions.includes(keyword);
  }

  /**
   * Writes a command line as nodemailer does, with the real address in place
   * of an alias on MAIL FROM and RCPT TO, and SMTPUTF8 added to MAIL FROM
   * when `requireSmtpUtf8` is set.
   */
  _sendCommand(line: string, logLine?: string): void {
    this.lastProgress = performance.now();
    // Most messages have neither, so their commands skip the two regular expressions below.
    if (this.envelopeAliases.size === 0 && !this.requireSmtpUtf8) {
      baseSendCommand.call(this, line, logLine);
      return;
    }
    let text = line;
    const path = /^(MAIL FROM:|RCPT TO:)<([^>]*)>/i.exec(text);
    const real = path ? this.envelopeAliases.get(path[2]!) : undefined;
    if (path && real !== undefined) text = `${path[1]}<${real}>${text.slice(path[0].length)}`;
    const add = this.requireSmtpUtf8 && /^MAIL FROM:/i.test(text) && !/ SMTPUTF8(?: |$)/i.test(text);
    if (add) text = `${text} SMTPUTF8`;
    baseSendCommand.call(this, text, logLine === undefined || text === line ? logLine : text);
  }
}
