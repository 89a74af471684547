import type { Connection, Transaction } from "../session-state.js";
import { asciiDomainAddress } from "../smtp/domain.js";

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** Formats a date as RFC 5322 section 3.3 requires, in UTC. */
export function rfc5322Date(date: Date): string {
  const pad = (value: number) => String(value).padStart(2, "0");
  return (
    `${DAYS[date.getUTCDay()]}, ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`
  );
}

/** Keeps a client-supplied name from breaking the header's syntax. */
function clean(text: string): string {
  return text.replace(/[^\x21-\x7e]|[()\\;]/g, "?");
}

/**
 * Builds the engine's Received header (RFC 5321 section 4.4), folded, ending
 * in CRLF. The protocol name follows RFC 3848 (ESMTP, ESMTPS, ESMTPSA) and
 * RFC 6531 (UTF8SMTP...).
 */
export function receivedHeader(options: {
  connection: Connection;
  transaction: Transaction;
  hostname: string;
  utf8: boolean;
  date?: Date;
}): string {
  const { connection, transaction } = options;
  const ip = connection.remoteAddress.includes(":")
    ? `IPv6:${connection.remoteAddress}`
    : connection.remoteAddress;
  const reverse = connection.remoteHostname ? `${clean(connection.remoteHostname)} ` : "";
  const helo = clean(connection.heloName ?? "unknown");

  let protocol = connection.heloVerb === "HELO" ? "SMTP" : "ESMTP";
  if (protocol === "ESMTP") {
    if (connection.tls.secure) protocol += "S";
    if (connection.user) protocol += "A";
  }
  // RFC 6531 names them UTF8SMTP, UTF8SMTPS, UTF8SMTPA and UTF8SMTPSA.
  if (options.utf8 && protocol.startsWith("ESMTP")) protocol = `UTF8SMTP${protocol.slice("ESMTP".length)}`;

  const only = transaction.recipients.length === 1 ? transaction.recipients[0] : undefined;
  // An ASCII local part gets its domain as A-labels, so that the header
  // stays ASCII for a relay to a server without SMTPUTF8.
  const forClause = only ? `\r\n\tfor <${asciiDomainAddress(only.address.address)}>` : "";
  const tls = connection.tls.secure && connection.tls.protocol
    ? ` (${connection.tls.protocol}${connection.tls.cipher ? ` ${connection.tls.cipher}` : ""})`
    : "";

  return (
    `Received: from ${helo} (${reverse}[${ip}])\r\n` +
    `\tby ${options.hostname} (Mailroom) with ${protocol}${tls} id ${transaction.id}` +
    `${forClause}; ${rfc5322Date(options.date ?? new Date())}\r\n`
  );
}
