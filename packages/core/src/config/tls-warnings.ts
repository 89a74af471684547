import { X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import type { ServerConfig } from "./schema.js";

/** Days before a certificate's notAfter date from which it gets a warning, so that it is renewed in time. */
export const CERTIFICATE_RENEWAL_DAYS = 14;

const DAY_MS = 24 * 60 * 60 * 1000;

/** A problem with a key or certificate file of `server.tls` that does not stop the server. */
export interface TlsWarning {
  /** The option that names the file, such as `server.tls.cert` or `server.tls.sni.mail.example.com.key`. */
  option: string;
  file: string;
  message: string;
  /** Log fields: the certificate's subject and validity dates, or the key file's mode in octal. */
  details: Record<string, string>;
}

/**
 * Lists the certificates of `server.tls` and its SNI entries that are
 * expired, not yet valid or expire within CERTIFICATE_RENEWAL_DAYS of
 * `now`, and the private key files that grant any access to their group or
 * to other users. Every certificate in a file is checked, the chain too. A
 * file named by several options is checked once. Files that cannot be read
 * or parsed are skipped, because loadTlsFiles reports those as errors.
 * `mailroom check` prints these warnings, and `start` and a reload log them.
 */
export function tlsWarnings(server: ServerConfig, now: Date = new Date()): TlsWarning[] {
  const tls = server.tls;
  if (!tls) return [];
  const pairs: { option: string; key: string; cert: string }[] = [{ option: "server.tls", key: tls.key, cert: tls.cert }];
  for (const [name, entry] of Object.entries(tls.sni)) {
    pairs.push({ option: `server.tls.sni.${name}`, key: entry.key, cert: entry.cert });
  }

  const warnings: TlsWarning[] = [];
  const seen = new Set<string>();
  for (const pair of pairs) {
    if (!seen.has(pair.cert)) {
      seen.add(pair.cert);
      warnings.push(...certificateWarnings(`${pair.option}.cert`, pair.cert, now));
    }
    if (!seen.has(pair.key)) {
      seen.add(pair.key);
      const warning = keyModeWarning(`${pair.option}.key`, pair.key);
      if (warning) warnings.push(warning);
    }
  }
  return warnings;
}

/** Formats a certificate date as ISO 8601 in UTC, to the second as certificates store it. */
function isoDate(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function certificateWarnings(option: string, file: string, now: Date): TlsWarning[] {
  let text: string;
  try {
    text = readFileSync(file, "latin1");
  } catch {
    return [];
  }
  const warnings: TlsWarning[] = [];
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  for (const block of blocks) {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(block);
    } catch {
      continue;
    }
    // X509Certificate of Node 20 has no validFromDate or validToDate, so the "Jan  1 00:00:00 2026 GMT" strings are parsed.
    const validFrom = new Date(certificate.validFrom);
    const validTo = new Date(certificate.validTo);
    // A subject with several attributes comes one per line.
    const subject = certificate.subject.split("\n").join(", ");
    const details = { subject, validFrom: isoDate(validFrom), validTo: isoDate(validTo) };
    const named = `certificate ${file} (subject ${subject})`;
    let problem: string | undefined;
    if (validTo.getTime() < now.getTime()) {
      problem = `${named} expired on ${details.validTo}, so clients that verify certificates reject it. Renew it`;
    } else if (validFrom.getTime() > now.getTime()) {
      problem =
        `${named} is not valid before ${details.validFrom}, so clients that verify certificates reject it until then. ` +
        "Check the certificate's dates and this host's clock";
    } else if (validTo.getTime() - now.getTime() < CERTIFICATE_RENEWAL_DAYS * DAY_MS) {
      problem = `${named} expires on ${details.validTo}, less than ${CERTIFICATE_RENEWAL_DAYS} days from now. Renew it`;
    }
    if (problem) warnings.push({ option, file, message: problem, details });
  }
  return warnings;
}

/** Returns a warning when the key file's mode grants any access to its group or to other users (mode & 0o077). */
function keyModeWarning(option: string, file: string): TlsWarning | undefined {
  // Windows has no such permission bits: Node reports 666 or 444 for every file there.
  if (process.platform === "win32") return undefined;
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    return undefined;
  }
  if ((mode & 0o077) === 0) return undefined;
  const octal = mode.toString(8);
  return {
    option,
    file,
    message: `private key ${file} is accessible to its group or other users (mode ${octal}). Run chmod 600 on it`,
    details: { mode: octal },
  };
}
