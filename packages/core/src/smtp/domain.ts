import { domainToASCII } from "node:url";
import { z } from "zod";
import { MAX_DOMAIN, parseDomain } from "./address.js";

const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const NON_ASCII = /[^\x00-\x7f]/;

/** Checks whether every character of `text` is US-ASCII (U+0000 to U+007F). */
export function isAsciiText(text: string): boolean {
  return !NON_ASCII.test(text);
}

/**
 * Returns an address with its domain as A-labels when its local part is
 * ASCII (`bob@bücher.example` becomes `bob@xn--bcher-kva.example`), so that
 * a server or header without SMTPUTF8 can carry it. An address with a
 * non-ASCII local part, which only SMTPUTF8 (RFC 6531) can carry, is
 * returned unchanged, as is one without an `@` or whose domain fails IDNA.
 */
export function asciiDomainAddress(address: string): string {
  if (isAsciiText(address)) return address;
  const at = address.lastIndexOf("@");
  if (at === -1) return address;
  const local = address.slice(0, at);
  if (!isAsciiText(local)) return address;
  const domain = normalizeDomain(address.slice(at + 1));
  return domain === null ? address : `${local}@${domain}`;
}

/**
 * Brings a domain or address literal into the one form that every domain
 * comparison uses: lower case, no trailing dot, international labels as
 * A-labels (`Bücher.Example` becomes `xn--bcher-kva.example`), IPv6 literals
 * in RFC 5952 form (`[IPv6:2001:DB8:0::1]` becomes `[ipv6:2001:db8::1]`).
 * U-labels are converted with IDNA as WHATWG URL does (UTS #46, non-transitional,
 * so `faß` stays distinct from `fass`). The empty domain of a bare
 * `postmaster` recipient stays "". Returns null when the text is neither a
 * domain nor an address literal, or when a label fails the IDNA rules (such
 * as `xn--zz`, which is not valid Punycode).
 */
export function normalizeDomain(text: string): string | null {
  const known = normalized.get(text);
  if (known !== undefined) return known;
  const checked = normalizeUncached(text);
  const result = "domain" in checked ? checked.domain : null;
  // Recipients repeat a few domains, so a small cache saves the IDNA conversion.
  if (normalized.size >= NORMALIZED_CACHE_SIZE) normalized.clear();
  normalized.set(text, result);
  return result;
}

const NORMALIZED_CACHE_SIZE = 1000;
const normalized = new Map<string, string | null>();

/**
 * The normalized form of a domain, or why there is none: `syntax` for text
 * that is neither a domain nor an address literal, `idna` for a name whose
 * labels fail IDNA or are too long as A-labels.
 */
type Normalized = { domain: string } | { failure: "syntax" | "idna" };

function normalizeUncached(text: string): Normalized {
  if (text === "") return { domain: "" };
  let trimmed = text.trim();
  // The engine rejects a trailing dot in a path; config and directory entries may have one.
  if (trimmed.endsWith(".") && !trimmed.startsWith("[")) trimmed = trimmed.slice(0, -1);
  if (trimmed === "") return { failure: "syntax" };
  const parsed = parseDomain(trimmed, true);
  if (parsed === null) return { failure: "syntax" };
  if (parsed.startsWith("[")) return { domain: normalizeLiteral(parsed) };

  const labels: string[] = [];
  for (const label of parsed.split(".")) {
    const ascii = toALabel(label);
    if (ascii === null) return { failure: "idna" };
    labels.push(ascii);
  }
  const domain = labels.join(".");
  return domain.length > MAX_DOMAIN ? { failure: "idna" } : { domain };
}

/**
 * Converts one lower-case label to its ASCII form. Labels are converted one
 * at a time because WHATWG's domainToASCII reads a whole name that ends in a
 * number as an IPv4 address (`0x7f.1` would become `127.0.0.1`).
 */
function toALabel(label: string): string | null {
  const international = !isAsciiText(label) || label.startsWith("xn--");
  if (!international) return label;
  // "" means the label fails IDNA: bad Punycode, a disallowed code point, or a bidi rule.
  const ascii = domainToASCII(label).toLowerCase();
  // The UTS #46 mapping may turn a character into ASCII punctuation (U+2488 into "1."), which no label may contain.
  if (!LDH_LABEL.test(ascii) || ascii.length > 63) return null;
  return ascii;
}

function normalizeLiteral(literal: string): string {
  const inner = literal.slice(1, -1);
  if (/^ipv6:/i.test(inner)) {
    // WHATWG URL serializes IPv6 hosts in the RFC 5952 form: lower case, the longest run of zeros as "::".
    try {
      const host = new URL(`http://[${inner.slice(5)}]/`).hostname;
      return `[ipv6:${host.slice(1, -1)}]`;
    } catch {
      // NOTE: only reached if net.isIPv6 (which parseDomain used) accepts text that URL rejects.
      return literal.toLowerCase();
    }
  }
  return literal.toLowerCase();
}

/**
 * Checks a domain name from a config file and returns its normalized form
 * (see normalizeDomain), or a message that explains what is wrong with it.
 * Address literals are accepted only with `literals: true`.
 */
export function checkDomainName(
  text: string,
  options: { literals?: boolean } = {},
): { domain: string } | { error: string } {
  const quoted = JSON.stringify(text);
  const expected = options.literals
    ? "expected a domain name such as example.com or an address literal such as [192.0.2.1]"
    : "expected a domain name such as example.com";
  // normalizeDomain keeps the empty domain of a bare postmaster, which names no domain here.
  const checked: Normalized = text === "" ? { failure: "syntax" } : normalizeUncached(text);
  if ("failure" in checked && checked.failure === "idna") {
    return {
      error: `invalid international domain name ${quoted}: a label fails the IDNA rules (RFC 5891) or is longer than 63 octets as an A-label`,
    };
  }
  if ("failure" in checked || (checked.domain.startsWith("[") && !options.literals)) {
    return { error: `invalid domain ${quoted}: ${expected}` };
  }
  return checked;
}

/**
 * A zod schema for a domain name in plugin options. Its output is the
 * normalized form, so `bücher.example` and `xn--bcher-kva.example` compare
 * equal. Address literals are accepted only with `literals: true`.
 */
export const domainName = (options: { literals?: boolean } = {}) =>
  z.string().transform((value, context) => {
    const checked = checkDomainName(value, options);
    if ("error" in checked) {
      context.addIssue({ code: "custom", message: checked.error });
      return z.NEVER;
    }
    return checked.domain;
  });
