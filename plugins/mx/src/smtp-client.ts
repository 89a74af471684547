import SMTPConnection from "nodemailer/lib/smtp-connection";

/**
 * Members of nodemailer's SMTPConnection (10.6.1, pinned exactly) that its
 * type declarations leave out: the extensions it read from the EHLO reply,
 * and the method that writes each command line.
 */
interface ConnectionInternals {
  _supportedExtensions?: unknown;
  _sendCommand(line: string, logLine?: string): void;
}

const baseSendCommand = (SMTPConnection.prototype as unknown as ConnectionInternals)._sendCommand;
if (typeof baseSendCommand !== "function") {
  throw new TypeError("nodemailer's SMTPConnection has no _sendCommand method; this version is not supported");
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
 * The tests of plugin-mx send through all of these, so an upgrade of
 * nodemailer that changes the members they use fails them.
 */
export class SmtpClient extends SMTPConnection {
  /** Makes the next MAIL FROM carry SMTPUTF8 even for an ASCII envelope. Set it only when the server offers SMTPUTF8. */
  requireSmtpUtf8 = false;

  /** Envelope addresses by the alias that stands for them in nodemailer's envelope, for the message being sent. */
  readonly envelopeAliases = new Map<string, string>();

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
