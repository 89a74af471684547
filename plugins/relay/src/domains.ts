import { normalizeDomain } from "@mailroom/core";

/** A set of normalized domains with a lookup that accepts any spelling of a domain (see normalizeDomain). */
export class DomainSet {
  private readonly domains: ReadonlySet<string>;

  constructor(domains: Iterable<string>) {
    const normalized = new Set<string>();
    for (const domain of domains) {
      const value = normalizeDomain(domain);
      if (value !== null && value !== "") normalized.add(value);
    }
    this.domains = normalized;
  }

  /**
   * Returns true when `domain` is in the set, in any case, with or without a
   * trailing dot, and as U-labels or A-labels.
   */
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
