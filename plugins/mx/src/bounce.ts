import { randomBytes } from "node:crypto";
import { asciiDomainAddress, isAsciiText, rfc5322Date } from "@mailroom/core";
import type { FailedRecipient } from "./store.js";

export interface BounceInput {
  /** The original envelope sender, who receives the report. */
  sender: string;
  hostname: string;
  arrivalDate: Date;
  now: Date;
  failed: FailedRecipient[];
  /** The original header block, ending in CRLF. */
  headers: string;
}

/**
 * Encodes an address in the 7-bit utf-8-addr-xtext form of RFC 6533
 * section 3: printable ASCII other than "+", "=" and the backslash stays as
 * it is, and every other character becomes \x{HEX}, its code point in
 * upper-case hex.
 */
function utf8AddressXtext(address: string): string {
  let encoded = "";
  for (const char of address) {
    const code = char.codePointAt(0)!;
    const plain = code >= 0x21 && code <= 0x7e && char !== "+" && char !== "=" && char !== "\\";
    encoded += plain ? char : `\\x{${code.toString(16).toUpperCase()}}`;
  }
  return encoded;
}

/**
 * Returns an address as a DSN address type: rfc822 with the address as it
 * went on the wire (A-label domains), or, for a non-ASCII local part, the
 * utf-8 type of RFC 6533. That type is written in its xtext form, because a
 * message/delivery-status part is 7-bit.
 */
function addressField(address: string): string {
  const wire = asciiDomainAddress(address);
  return isAsciiText(wire) ? `rfc822; ${wire}` : `utf-8; ${utf8AddressXtext(wire)}`;
}

/** Keeps a remote reply on one line of printable text. */
function oneLine(text: string): string {
  return text.replace(/\r?\n/g, " ").replace(/[^\x20-\x7e\u00a0-\uffff]/g, "?").trim();
}

/** Keeps a delivery-status field value 7-bit: characters outside printable ASCII become "?". */
function asciiField(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?");
}

const SMTP_REPLY = /^\d{3}(?:[ -]|$)/;

/** RFC 5322 section 2.1.1: a line must be at most 998 characters long, and should be at most 78. */
const MAX_LINE_LENGTH = 998;
const FOLD_WIDTH = 78;

/**
 * Returns `text` as one line when it fits MAX_LINE_LENGTH, and otherwise
 * split at spaces into lines of at most FOLD_WIDTH characters. With `fold`
 * (a header-style field), each further line starts with a space, so the
 * lines unfold into the text again (RFC 5322 section 2.2.3). A run of
 * more than FOLD_WIDTH characters without a space is cut, and unfolding
 * then adds a space at each cut.
 */
function splitLongLine(text: string, fold: boolean): string[] {
  if (text.length <= MAX_LINE_LENGTH) return [text];
  const pieces: string[] = [];
  for (const word of text.split(/(?= )/)) {
    for (let start = 0; start < word.length; start += FOLD_WIDTH - 1) pieces.push(word.slice(start, start + FOLD_WIDTH - 1));
  }
  const lines: string[] = [];
  let line = "";
  for (const piece of pieces) {
    if (line !== "" && line.length + piece.length > FOLD_WIDTH) {
      lines.push(line);
      if (!fold) line = piece.trimStart();
      else line = piece.startsWith(" ") ? piece : ` ${piece}`;
    } else {
      line += piece;
    }
  }
  if (line !== "") lines.push(line);
  return lines;
}

/** Returns the readable line of a failed recipient: the remote's reply and the host that sent it, or the error. */
function explanation(item: FailedRecipient): string {
  const text = oneLine(item.response);
  if (item.remoteMta && SMTP_REPLY.test(text)) return `<${item.recipient}>: host ${item.remoteMta} said: ${text}`;
  return `<${item.recipient}>: ${text}`;
}

/**
 * Returns the Diagnostic-Code field (RFC 3464 section 2.3.6): "smtp; " and
 * the reply as a remote SMTP server sent it, which `remoteMta` names. Other
 * failures (a refused connection, a timeout, a DNS result, a deliver hook's
 * answer, a local error) get their description under the private type
 * X-Mailroom, as Postfix uses X-Postfix. That holds even for a description
 * written like a reply, such as "550 5.1.2 Domain nx.example does not exist".
 */
function diagnosticCode(item: FailedRecipient): string {
  const text = asciiField(oneLine(item.response));
  return item.remoteMta && SMTP_REPLY.test(text) ? `smtp; ${text}` : `X-Mailroom; ${text}`;
}

const DURATION_UNITS: [name: string, milliseconds: number][] = [
  ["day", 86_400_000],
  ["hour", 3_600_000],
  ["minute", 60_000],
];

/**
 * Describes a duration in whole days, hours, minutes or seconds: the
 * largest unit of which it has at least two, so 90 minutes stay "90
 * minutes" and 5 days are "5 days". Counts are rounded down.
 */
export function describeDuration(milliseconds: number): string {
  for (const [name, size] of DURATION_UNITS) {
    if (milliseconds >= 2 * size) return `${Math.floor(milliseconds / size)} ${name}s`;
  }
  const seconds = Math.floor(Math.max(milliseconds, 0) / 1000);
  return seconds === 1 ? "1 second" : `${seconds} seconds`;
}

/**
 * Builds an RFC 3464 delivery status notification (multipart/report): a
 * readable explanation, message/delivery-status with one block per failed
 * recipient, and the original message's headers, as message/global-headers
 * (RFC 6533) when they contain UTF-8.
 */
export function buildBounce(input: BounceInput): string {
  const boundary = `=_mailroom_${randomBytes(12).toString("hex")}`;
  const lines: string[] = [];
  const push = (...text: string[]) => lines.push(...text);

  push(
    `From: Mail Delivery System <MAILER-DAEMON@${input.hostname}>`,
    `To: <${asciiDomainAddress(input.sender)}>`,
    "Subject: Undelivered Mail Returned to Sender",
    `Date: ${rfc5322Date(input.now)}`,
    `Message-ID: <${input.now.getTime().toString(36)}.${randomBytes(6).toString("hex")}@${input.hostname}>`,
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    "",
    "This is a MIME-encapsulated delivery status report.",
    "",
    `--${boundary}`,
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "Content-Description: Notification",
    "",
    `This is the mail system at ${input.hostname}.`,
    "",
    "Your message could not be delivered to one or more recipients.",
    "The addresses and the reasons are below.",
    "",
  );
  for (const item of input.failed) {
    push(...splitLongLine(explanation(item), false));
  }
  push(
    "",
    `--${boundary}`,
    "Content-Type: message/delivery-status",
    "Content-Description: Delivery report",
    "",
    `Reporting-MTA: dns; ${input.hostname}`,
    `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`,
  );
  for (const item of input.failed) {
    push(
      "",
      ...splitLongLine(`Final-Recipient: ${addressField(item.recipient)}`, true),
      "Action: failed",
      `Status: ${item.enhanced}`,
      ...(item.remoteMta ? [`Remote-MTA: dns; ${asciiField(item.remoteMta)}`] : []),
      ...splitLongLine(`Diagnostic-Code: ${diagnosticCode(item)}`, true),
    );
  }
  const utf8Headers = !isAsciiText(input.headers);
  push(
    "",
    `--${boundary}`,
    utf8Headers ? "Content-Type: message/global-headers" : "Content-Type: text/rfc822-headers",
    ...(utf8Headers ? ["Content-Transfer-Encoding: 8bit"] : []),
    "Content-Description: Undelivered message headers",
    "",
  );
  const headers = input.headers.replace(/\r?\n$/, "").split(/\r?\n/);
  push(...headers, "", `--${boundary}--`, "");
  return lines.join("\r\n");
}
