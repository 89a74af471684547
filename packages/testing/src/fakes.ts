import type { Clock, DnsLookup, DnsResolver, MxRecord } from "@mailroom/core";
import { DnsTemporaryError } from "@mailroom/core";
import { pino } from "pino";

/**
 * A Clock that moves only when the test calls `advance()`. `sleep()` resolves when
 * the clock passes its deadline.
 */
export class TestClock implements Clock {
  private sleepers: { until: number; resolve: () => void }[] = [];

  constructor(private current = Date.UTC(2026, 0, 1)) {}

  now(): number {
    return this.current;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted || ms <= 0) return resolve();
      const sleeper = { until: this.current + ms, resolve: () => done() };
      const done = () => {
        this.sleepers = this.sleepers.filter((entry) => entry !== sleeper);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      signal?.addEventListener("abort", done, { once: true });
      this.sleepers.push(sleeper);
    });
  }

  /** Moves time forward and wakes the sleepers whose deadline passed. */
  advance(ms: number): void {
    this.current += ms;
    for (const sleeper of [...this.sleepers]) if (sleeper.until <= this.current) sleeper.resolve();
  }
}

/** A record set for StaticDnsResolver: a list of records, or a failure. */
type Entry<T> = T[] | "nxdomain" | "servfail" | "timeout";

export interface StaticZone {
  mx?: Record<string, Entry<MxRecord>>;
  a?: Record<string, Entry<string>>;
  aaaa?: Record<string, Entry<string>>;
  ptr?: Record<string, Entry<string>>;
}

/**
 * A DnsResolver that returns records from a table, for unit tests of plugins. Names
 * missing from the table are NXDOMAIN. Names in the table and in lookups
 * match without regard to case or a trailing dot. End-to-end tests use a
 * real DNS server on loopback instead.
 */
export class StaticDnsResolver implements DnsResolver {
  private readonly zone: StaticZone;

  constructor(zone: StaticZone) {
    this.zone = {
      ...(zone.mx ? { mx: byName(zone.mx) } : {}),
      ...(zone.a ? { a: byName(zone.a) } : {}),
      ...(zone.aaaa ? { aaaa: byName(zone.aaaa) } : {}),
      ...(zone.ptr ? { ptr: byName(zone.ptr) } : {}),
    };
  }

  private lookup<T>(table: Record<string, Entry<T>> | undefined, name: string): Promise<DnsLookup<T>> {
    const entry = table?.[lookupKey(name)];
    if (entry === undefined || entry === "nxdomain") return Promise.resolve({ status: "nxdomain" });
    if (entry === "servfail" || entry === "timeout") {
      return Promise.reject(new DnsTemporaryError(`${name}: ${entry}`, entry));
    }
    return Promise.resolve(entry.length ? { status: "found", records: entry } : { status: "nodata" });
  }

  resolveMx(domain: string) {
    return this.lookup(this.zone.mx, domain);
  }

  resolve4(name: string) {
    return this.lookup(this.zone.a, name);
  }

  resolve6(name: string) {
    return this.lookup(this.zone.aaaa, name);
  }

  resolvePtr(address: string) {
    return this.lookup(this.zone.ptr, address);
  }
}

/** Returns `name` in lower case without a trailing dot, the key of StaticDnsResolver's tables. */
function lookupKey(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}

/** Copies a table of StaticDnsResolver with its names as lookup keys. */
function byName<T>(table: Record<string, Entry<T>>): Record<string, Entry<T>> {
  return Object.fromEntries(Object.entries(table).map(([name, entry]) => [lookupKey(name), entry]));
}

/**
 * The test kit's DnsResolver when a test gives none. It sends no query and
 * rejects every lookup with an error that tells how to give the test its
 * DNS data, so a unit test never depends on the system's resolver.
 */
export class NoDnsResolver implements DnsResolver {
  private fail(type: string, name: string): Promise<never> {
    const error = new Error(
      `DNS ${type} lookup of ${name} failed: the test has no DNS resolver. Pass { dns: new StaticDnsResolver({ ... }) } ` +
        "to testPlugin() or testPlugins(), or set config.server.dns.nameservers to a DNS server that the test runs",
    );
    return Promise.reject(Object.assign(error, { code: "MAILROOM_TEST_NO_DNS" }));
  }

  resolveMx(domain: string): Promise<DnsLookup<MxRecord>> {
    return this.fail("MX", domain);
  }

  resolve4(name: string): Promise<DnsLookup<string>> {
    return this.fail("A", name);
  }

  resolve6(name: string): Promise<DnsLookup<string>> {
    return this.fail("AAAA", name);
  }

  resolvePtr(address: string): Promise<DnsLookup<string>> {
    return this.fail("PTR", address);
  }
}

/**
 * Creates a pino logger that keeps every line in memory, for tests that read
 * the logs: as text in `lines` (the array given, when there is one) and
 * parsed in `records`, both filled as the lines are written.
 */
export function captureLogs(level = "trace", lines: string[] = []): {
  logger: import("pino").Logger;
  /** The raw JSON lines, in order. */
  lines: string[];
  /** The parsed lines, in order. */
  records: Record<string, unknown>[];
  /** Returns the lines parsed. */
  entries(): Record<string, unknown>[];
} {
  const records: Record<string, unknown>[] = [];
  const write = (text: string) => {
    lines.push(text);
    for (const line of text.split("\n")) if (line !== "") records.push(JSON.parse(line) as Record<string, unknown>);
  };
  const logger = pino({ level }, { write });
  return {
    logger,
    lines,
    records,
    entries: () => lines.flatMap((line) => line.split("\n").filter(Boolean)).map((line) => JSON.parse(line)),
  };
}
