import { domainToASCII } from "node:url";
import { parseDomain } from "@mailroom/core";
import type ipaddr from "ipaddr.js";
import { parseIp } from "./networks.js";

/**
 * Brings a domain or address literal into the one form that relay decisions
 * compare: lower case, no trailing dot, international labels as A-labels
 * (`bücher.example` becomes `xn--bcher-kva.example`), IPv6 literals in
 * RFC 5952 form (`[IPv6:2001:DB8:0::1]` becomes `[ipv6:2001:db8::1]`).
 * The empty domain of a bare `postmaster` recipient stays "".
 * Returns null when the text is neither a domain nor an address literal.
 */
export function normalizeDomain(text: string): string | null {
  const known = normalized.get(text);
  if (known !== undefined) return known;
  const result = normalizeUncached(text);
  // Recipients repeat a few domains, so a small cache saves the IDNA conversion.
  if (normalized.size >= NORMALIZED_CACHE_SIZE) normalized.clear();
  normalized.set(text, result);
  return result;
}

const NORMALIZED_CACHE_SIZE = 1000;
const normalized = new Map<string, string | null>();

function normalizeUncached(text: string): string | null {
  let trimmed = text.trim();
  // The engine rejects a trailing dot in a path; config and directory entries may have one.
  if (trimmed.endsWith(".") && !trimmed.startsWith("[")) trimmed = trimmed.slice(0, -1);
  if (trimmed === "") return null;
  const parsed = parseDomain(trimmed, true);
  if (parsed === null) return null;
  if (parsed.startsWith("[")) return normalizeLiteral(parsed);
  const ascii = domainToASCII(parsed);
  return ascii === "" ? parsed : ascii.toLowerCase();
}

function normalizeLiteral(literal: string): string {
  const inner = literal.slice(1, -1);
  if (/^ipv6:/i.test(inner)) {
    // parseDomain accepted it with net.isIPv6, so it parses as IPv6.
    const ip = parseIp(inner.slice(5)) as ReturnType<typeof ipaddr.IPv6.parse>;
    return `[ipv6:${ip.toRFC5952String()}]`;
  }
  return literal.toLowerCase();
}

/** A set of normalized domains with a case- and trailing-dot-insensitive lookup. */
export class DomainSet {
  private readonly domains: ReadonlySet<string>;

  constructor(domains: Iterable<string>) {
    const normalized = new Set<string>();
    for (const domain of domains) {
      const value = normalizeDomain(domain);
      if (value !== null) normalized.add(value);
    }
    this.domains = normalized;
  }

  /** Returns true when `domain` (in any case, with or without a trailing dot) is in the set. */
  has(domain: string): boolean {
    const value = normalizeDomain(domain);
    return value !== null && this.domains.has(value);
  }

  get size(): number {
    return this.domains.size;
  }

  values(): string[] {
    return [...this.domains];
  }
}
