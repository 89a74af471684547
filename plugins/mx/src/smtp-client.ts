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
 * nodemailer's SMTP client with the two things plugin-mx needs for SMTPUTF8
 * (RFC 6531) that its public API lacks. nodemailer adds SMTPUTF8 to MAIL
 * FROM by itself when an envelope address is not ASCII and the server
 * offered it. This class also reports whether the server offered an
 * extension, and adds SMTPUTF8 for a message whose envelope is ASCII but
 * whose header fields are UTF-8. The tests of plugin-mx send through both,
 * so an upgrade of nodemailer that changes the members they use fails them.
 */
export class SmtpClient extends SMTPConnection {
  /** Makes the next MAIL FROM carry SMTPUTF8 even for an ASCII envelope. Set it only when the server offers SMTPUTF8. */
  requireSmtpUtf8 = false;

  /** Checks whether the server's EHLO reply offered `keyword`, one of the extensions nodemailer records (SMTPUTF8, 8BITMIME, DSN, PIPELINING, SIZE, REQUIRETLS). */
  offers(keyword: string): boolean {
    const extensions = (this as unknown as ConnectionInternals)._supportedExtensions;
    if (!Array.isArray(extensions)) {
      throw new TypeError("nodemailer's SMTPConnection keeps no _supportedExtensions list; this version is not supported");
    }
    return extensions.includes(keyword);
  }

  /** Writes a command line as nodemailer does, adding SMTPUTF8 to MAIL FROM when `requireSmtpUtf8` is set. */
  _sendCommand(line: string, logLine?: string): void {
    const add = this.requireSmtpUtf8 && /^MAIL FROM:/i.test(line) && !/ SMTPUTF8(?: |$)/i.test(line);
    baseSendCommand.call(this, add ? `${line} SMTPUTF8` : line, add && logLine !== undefined ? `${logLine} SMTPUTF8` : logLine);
  }
}
