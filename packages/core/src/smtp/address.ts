import net from "node:net";

/** A mailbox from a MAIL or RCPT path, split into its two parts. */
export interface Address {
  /** Local part as the client meant it: quotes and escapes removed. */
  local: string;
  /** Domain, lower-cased; an address literal keeps its brackets. Empty for a bare postmaster. */
  domain: string;
  /** The path exactly as the client sent it, without the angle brackets. */
  raw: string;
  /** `local@domain` in canonical form, quoted where the local part needs it. */
  address: string;
}

/** ESMTP parameters after the path, keyed by upper-case keyword. */
export type Parameters = Record<string, string | true>;

export type PathResult =
  | { ok: true; address: Address | null; params: Parameters }
  | { ok: false; reason: string };

export interface PathOptions {
  /** The path is a reverse-path, so `<>` is allowed. */
  sender: boolean;
  /** The client sent SMTPUTF8, so non-ASCII local parts and domains are allowed. */
  utf8: boolean;
}

/** RFC 5321 section 4.5.3.1 limits, in octets. */
export const MAX_LOCAL_PART = 64;
export const MAX_DOMAIN = 255;
export const MAX_PATH = 256;

const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]$/;
const LDH_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;
const ESMTP_KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
const ESMTP_VALUE = /^[\x21-\x3c\x3e-\x7e]+$/;

function isAtext(char: string, utf8: boolean): boolean {
  return ATEXT.test(char) || (utf8 && char.charCodeAt(0) > 0x7f);
}

function isQtext(char: string, utf8: boolean): boolean {
  const code = char.charCodeAt(0);
  if (code > 0x7f) return utf8;
  return code >= 32 && code <= 126 && code !== 34 && code !== 92;
}

/** Returns true when `local` can be written without quotes (a Dot-string). */
function isDotString(local: string, utf8: boolean): boolean {
  if (local === "") return false;
  return local
    .split(".")
    .every(
      (atom) =>
        atom.length > 0 && [...atom].every((char) => isAtext(char, utf8)),
    );
}

/** Formats a local part as RFC 5321 requires: bare when possible, quoted otherwise. */
export function formatLocalPart(local: string): string {
  if (isDotString(local, true)) return local;
  return `"${local.replace(/(["\\])/g, "\\$1")}"`;
}

/** Formats an address as `local@domain`, or the bare local part when there is no domain. */
export function formatAddress(local: string, domain: string): string {
  const formatted = formatLocalPart(local);
  return domain ? `${formatted}@${domain}` : formatted;
}

function octets(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/**
 * Validates a domain or address literal and returns it in canonical form
 * (lower case), or null when it is malformed.
 */
export function parseDomain(text: string, utf8: boolean): string | null {
  if (text.startsWith("[")) return parseAddressLiteral(text);

  // RFC 5321 has no trailing dot in a Domain. Rejecting it keeps one spelling per domain.
  const domain = text;
  if (domain === "" || octets(domain) > MAX_DOMAIN) return null;

  for (const label of domain.split(".")) {
    if (label.length === 0 || octets(label) > 63) return null;
    if (LDH_LABEL.test(label)) continue;
    // A U-label (RFC 6531): letters beyond ASCII, digits and hyphens.
    const isULabel =
      utf8 &&
      /[^\x00-\x7f]/.test(label) &&
      /^[\p{L}\p{M}\p{N}](?:[\p{L}\p{M}\p{N}-]*[\p{L}\p{M}\p{N}])?$/u.test(
        label,
      );
    if (!isULabel) return null;
  }
  return domain.toLowerCase();
}

function parseAddressLiteral(text: string): string | null {
  if (!text.endsWith("]")) return null;
  const inner = text.slice(1, -1);

  if (/^IPv6:/i.test(inner)) {
    const ip = inner.slice(5);
    // Only hex digits, colons and an embedded IPv4 part: no zone index (`%eth0`).
    if (!/^[0-9A-Fa-f:.]+$/.test(ip) || !net.isIPv6(ip)) return null;
    return `[IPv6:${ip.toLowerCase()}]`;
  }
  if (net.isIPv4(inner)) return `[${inner}]`;

  // General-address-literal: Standardized-tag ":" 1*dcontent.
  const general = /^([A-Za-z0-9-]*[A-Za-z0-9]):([\x21-\x5a\x5e-\x7e]+)$/.exec(
    inner,
  );
  return general ? `[${inner}]` : null;
}

/**
 * Reads a quoted local part starting at `start` (the opening quote) and returns
 * the unescaped text and the index after the closing quote.
 */
function readQuoted(
  text: string,
  start: number,
  utf8: boolean,
): { value: string; end: number } | null {
  let value = "";
  let i = start + 1;
  while (i < text.length) {
    const char = text[i]!;
    if (char === '"') return { value, end: i + 1 };
    if (char === "\\") {
      const next = text[i + 1];
      if (next === undefined) return null;
      const code = next.charCodeAt(0);
      if (code < 32 || code > 126) return null;
      value += next;
      i += 2;
      continue;
    }
    if (!isQtext(char, utf8)) return null;
    value += char;
    i += 1;
  }
  return null;
}

/** Parses `local@domain` (the Mailbox production) into an Address. */
export function parseMailbox(
  raw: string,
  utf8: boolean,
): Address | { error: string } {
  let local: string;
  let rest: string;

  if (raw.startsWith('"')) {
    const quoted = readQuoted(raw, 0, utf8);
    if (!quoted) return { error: "invalid quoted local part" };
    local = quoted.value;
    rest = raw.slice(quoted.end);
  } else {
    // A Dot-string has no `@`, so the first one ends it (an address literal may contain more).
    const at = raw.indexOf("@");
    local = at === -1 ? raw : raw.slice(0, at);
    rest = at === -1 ? "" : raw.slice(at);
    if (!isDotString(local, utf8)) return { error: "invalid local part" };
  }

  if (!rest.startsWith("@")) return { error: "missing domain" };
  // The limit applies to the local part as written, quotes and escapes included.
  const written = raw.length - rest.length;
  if (octets(raw.slice(0, written)) > MAX_LOCAL_PART) return { error: "local part too long" };

  const domain = parseDomain(rest.slice(1), utf8);
  if (domain === null) return { error: "invalid domain" };

  return { local, domain, raw, address: formatAddress(local, domain) };
}

/**
 * Finds the `>` that closes a path opened at index 0, skipping quoted text.
 * Returns -1 when there is none.
 */
function findPathEnd(text: string): number {
  let quoted = false;
  for (let i = 1; i < text.length; i++) {
    const char = text[i];
    if (quoted && char === "\\") {
      i += 1;
    } else if (char === '"') {
      quoted = !quoted;
    } else if (char === ">" && !quoted) {
      return i;
    }
  }
  return -1;
}

/** Removes an RFC 5321 source route (`@a,@b:`), which servers must ignore. */
function stripSourceRoute(path: string, utf8: boolean): string | null {
  if (!path.startsWith("@")) return path;
  // The route ends at the first colon outside an address literal (`@[IPv6:::1]:`).
  let colon = -1;
  let inLiteral = false;
  for (let i = 0; i < path.length && colon === -1; i++) {
    const char = path[i];
    if (char === "[") inLiteral = true;
    else if (char === "]") inLiteral = false;
    else if (char === ":" && !inLiteral) colon = i;
    else if (char === '"') return null;
  }
  if (colon === -1) return null;
  const hops = path.slice(0, colon).split(",");
  const valid = hops.every(
    (hop) => hop.startsWith("@") && parseDomain(hop.slice(1), utf8) !== null,
  );
  return valid ? path.slice(colon + 1) : null;
}

/** Parses the ESMTP parameters after a path; keywords are case-insensitive. */
export function parseParameters(
  text: string,
): { ok: true; params: Parameters } | { ok: false; reason: string; code: "syntax" | "duplicate" } {
  const params: Parameters = {};
  const words = text.split(" ").filter((word) => word !== "");
  for (const word of words) {
    const equals = word.indexOf("=");
    const keyword = equals === -1 ? word : word.slice(0, equals);
    const value = equals === -1 ? true : word.slice(equals + 1);
    if (!ESMTP_KEYWORD.test(keyword)) {
      return { ok: false, reason: `Invalid parameter ${keyword}`, code: "syntax" };
    }
    if (value !== true && !ESMTP_VALUE.test(value)) {
      return { ok: false, reason: `Invalid value for ${keyword}`, code: "syntax" };
    }
    const key = keyword.toUpperCase();
    if (key in params) {
      return { ok: false, reason: `Duplicate parameter ${key}`, code: "duplicate" };
    }
    params[key] = value;
  }
  return { ok: true, params };
}

/**
 * Splits the argument of MAIL FROM: or RCPT TO: into the path and the
 * parameter text. A space after the colon is tolerated because common clients
 * send one.
 */
export function splitPathArgument(
  argument: string,
): { path: string; rest: string } | null {
  const text = argument.replace(/^ +/, "");
  if (!text.startsWith("<")) return null;
  // An unbalanced quote leaves no `>` outside quotes. The last `>` then ends a
  // path that parsePath rejects, so the client gets the path error, not a syntax error.
  let end = findPathEnd(text);
  if (end === -1) end = text.lastIndexOf(">");
  if (end <= 0) return null;
  const rest = text.slice(end + 1);
  if (rest !== "" && !rest.startsWith(" ")) return null;
  return { path: text.slice(1, end), rest };
}

/**
 * Parses a reverse-path or forward-path (the text between `<` and `>`).
 * Returns null for `<>`; the bare `postmaster` of a forward-path gets an
 * empty domain.
 */
export function parsePath(
  path: string,
  options: PathOptions,
): Address | null | { error: string } {
  if (octets(path) + 2 > MAX_PATH) return { error: "path too long" };
  if (!options.utf8 && /[^\x00-\x7f]/.test(path)) {
    return { error: "non-ASCII address without SMTPUTF8" };
  }
  if (/[\x00-\x1f\x7f]/.test(path)) return { error: "control character in path" };

  if (path === "") {
    return options.sender ? null : { error: "empty recipient" };
  }
  if (!options.sender && path.toLowerCase() === "postmaster") {
    return { local: path, domain: "", raw: path, address: path };
  }

  const mailbox = stripSourceRoute(path, options.utf8);
  if (mailbox === null) return { error: "invalid source route" };

  const parsed = parseMailbox(mailbox, options.utf8);
  if ("error" in parsed) return parsed;
  return { ...parsed, raw: path };
}
