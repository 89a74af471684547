import { asciiDomainAddress, isAsciiText } from "@mailroom/core";

/** The part of a message that needs SMTPUTF8: the sender, a recipient, or the header fields. */
export type Utf8Need = "sender" | "recipient" | "headers";

/** The envelope of one message for one connection, as `planEnvelope` returns it. */
export interface EnvelopePlan {
  /** The sender on the wire; false for the null sender. */
  from: string | false;
  /** The recipients on the wire, each once. */
  to: string[];
  /** The queued recipients that each wire recipient stands for. */
  recipientsOf: Map<string, string[]>;
  /** MAIL FROM must carry SMTPUTF8. */
  smtpUtf8: boolean;
  /** Queued recipients that the server cannot take, with the reason. */
  refused: { recipient: string; need: Utf8Need }[];
}

/**
 * Plans the envelope of a message for a server. The transaction needs
 * SMTPUTF8 when the sender's or a recipient's local part is not ASCII, or
 * when `utf8Headers` is set because the header fields are UTF-8. A server
 * that does not offer SMTPUTF8 gets no recipient that needs it. That is
 * every recipient when the sender or the header fields need it, else those
 * with a non-ASCII local part, and the rest go with an ASCII envelope.
 */
export function planEnvelope(
  job: { sender: string; recipients: readonly string[]; utf8Headers: boolean },
  serverOffersSmtpUtf8: boolean,
): EnvelopePlan {
  const from = job.sender === "" ? false : asciiDomainAddress(job.sender);
  let messageNeed: Utf8Need | undefined;
  if (from !== false && !isAsciiText(from)) messageNeed = "sender";
  else if (job.utf8Headers) messageNeed = "headers";
  const recipientsOf = new Map<string, string[]>();
  const refused: EnvelopePlan["refused"] = [];
  let anyUtf8 = messageNeed !== undefined;
  for (const recipient of job.recipients) {
    const wire = asciiDomainAddress(recipient);
    const need = messageNeed ?? (isAsciiText(wire) ? undefined : "recipient");
    if (need !== undefined) anyUtf8 = true;
    if (need !== undefined && !serverOffersSmtpUtf8) {
      refused.push({ recipient, need });
      continue;
    }
    const list = recipientsOf.get(wire);
    if (list) list.push(recipient);
    else recipientsOf.set(wire, [recipient]);
  }
  return { from, to: [...recipientsOf.keys()], recipientsOf, smtpUtf8: anyUtf8 && serverOffersSmtpUtf8, refused };
}

/** True when a header field of the message has octets above 127, such as UTF-8 text (RFC 6532). */
export function hasEightBitHeader(lines: Iterable<string>): boolean {
  for (const line of lines) if (!isAsciiText(line)) return true;
  return false;
}
