import { readFileSync } from "node:fs";
import net from "node:net";
import DNS from "dns2";
import { parseNameServerAddress } from "../config/schema.js";

/** A name server as `host` and `port`. */
export interface NameServer {
  host: string;
  port: number;
}

/** A DNS failure that may go away: SERVFAIL, REFUSED, a timeout or a network error. */
export class DnsTemporaryError extends Error {
  readonly code = "DNS_TEMPORARY";
  constructor(
    message: string,
    readonly reason: "servfail" | "refused" | "timeout" | "network" | "other",
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "DnsTemporaryError";
  }
}

/** The outcome of a lookup that got an authoritative answer. */
export type DnsLookup<T> =
  | { status: "found"; records: T[] }
  /** The name exists but has no record of this type. */
  | { status: "nodata" }
  | { status: "nxdomain" };

export interface MxRecord {
  exchange: string;
  priority: number;
}

/**
 * Looks up DNS records. Temporary failures throw DnsTemporaryError; a missing
 * name or record type is an ordinary result, so callers can tell a bounce
 * from a retry.
 */
export interface DnsResolver {
  resolveMx(domain: string): Promise<DnsLookup<MxRecord>>;
  resolve4(name: string): Promise<DnsLookup<string>>;
  resolve6(name: string): Promise<DnsLookup<string>>;
  resolvePtr(address: string): Promise<DnsLookup<string>>;
}

/**
 * Parses a name server entry of `server.dns.nameservers`: an IPv4 address,
 * `[v6]` or a bare IPv6 address, with an optional `:port` (53 by default)
 * after the IPv4 address or the brackets. Throws on anything else.
 */
export function parseNameServer(text: string): NameServer {
  const parsed = parseNameServerAddress(text);
  if (!parsed) {
    throw new Error(`invalid name server ${JSON.stringify(text)}; expected an IP address with an optional port, such as 192.0.2.53:53 or [2001:db8::53]:53`);
  }
  return parsed;
}

/** Reads the `nameserver` lines of /etc/resolv.conf (or another file). */
export function readResolvConf(file = "/etc/resolv.conf"): NameServer[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter((words) => words[0] === "nameserver" && words[1])
    .map((words) => ({ host: words[1]!.replace(/%.*$/, ""), port: 53 }));
}

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(Object.assign(new Error(`DNS query timed out after ${ms}ms`), { code: "ETIMEDOUT" }));
    }, ms);
    timer.unref?.();
  });
  promise.catch(() => undefined);
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

const RCODE = DNS.Packet.RCODE;
const TYPE = DNS.Packet.TYPE;

function reverseName(address: string): string {
  if (net.isIPv4(address)) {
    return `${address.split(".").reverse().join(".")}.in-addr.arpa`;
  }
  const groups = address.split("::");
  const head = groups[0] ? groups[0].split(":") : [];
  const tail = groups[1] ? groups[1].split(":") : [];
  const missing = 8 - head.length - tail.length;
  const full = [...head, ...Array(Math.max(missing, 0)).fill("0"), ...tail];
  const nibbles = full.map((group) => group.padStart(4, "0")).join("");
  return `${[...nibbles].reverse().join(".")}.ip6.arpa`;
}

function strip(name: string): string {
  return name.replace(/\.$/, "").toLowerCase();
}

/**
 * Returns the queried name and every name that its CNAME chain in
 * `answers` leads to. No DNS rule fixes the order of the chain's records in
 * an answer, so the chain is followed until no record adds a name. A CNAME
 * loop ends too, because each name is added once.
 */
function ownersOf(name: string, answers: DNS.Packet.Resource[]): Set<string> {
  const owners = new Set([strip(name)]);
  const aliases = answers.filter((answer) => answer.type === TYPE.CNAME && (answer as { domain?: string }).domain);
  for (let added = true; added; ) {
    added = false;
    for (const alias of aliases) {
      const target = strip((alias as { domain?: string }).domain!);
      if (owners.has(strip(alias.name)) && !owners.has(target)) {
        owners.add(target);
        added = true;
      }
    }
  }
  return owners;
}

function sameName(a: string, b: string): boolean {
  return strip(a) === strip(b);
}

/**
 * A DnsResolver on dns2's UDP client. Name servers are asked in order, one at
 * a time: the next one only after a timeout or network error, never after a
 * SERVFAIL or REFUSED answer, which are reported as temporary failures.
 * A reply whose question does not match the query is discarded.
 */
export class Dns2Resolver implements DnsResolver {
  private readonly servers: NameServer[];
  private readonly timeout: number;

  constructor(options: { nameservers?: NameServer[]; timeout?: number } = {}) {
    const servers = options.nameservers?.length
      ? options.nameservers
      : readResolvConf();
    if (servers.length === 0) {
      throw new Error(
        "No DNS name server configured: set server.dns.nameservers or add a nameserver line to /etc/resolv.conf",
      );
    }
    this.servers = servers;
    this.timeout = options.timeout ?? 5000;
  }

  private async query(name: string, type: keyof typeof TYPE): Promise<DNS.Packet> {
    let lastError: unknown;
    for (const server of this.servers) {
      const client = DNS.UDPClient({
        dns: server.host,
        port: server.port,
        socketType: net.isIPv6(server.host) ? "udp6" : "udp4",
        timeout: this.timeout,
      });
      let reply: DNS.Packet;
      try {
        // The deadline also covers dns2's retry over TCP after a truncated
        // UDP reply, which has no timeout of its own.
        reply = await withDeadline(client(name, type), this.timeout);
      } catch (error) {
        lastError = error;
        continue;
      }
      const question = reply.questions[0];
      if (!question || !sameName(question.name, name) || question.type !== TYPE[type]) {
        lastError = new Error(`reply from ${server.host}:${server.port} answers another question`);
        continue;
      }
      return reply;
    }
    const timedOut = (lastError as { code?: string } | undefined)?.code === "ETIMEDOUT";
    throw new DnsTemporaryError(
      `DNS ${type} lookup for ${name} failed: ${(lastError as Error)?.message ?? "no reply"}`,
      timedOut ? "timeout" : "network",
      { cause: lastError },
    );
  }

  private async lookup<T>(
    name: string,
    type: "MX" | "A" | "AAAA" | "PTR",
    pick: (answer: DNS.Packet.Resource) => T | undefined,
  ): Promise<DnsLookup<T>> {
    const reply = await this.query(name, type);
    const rcode = reply.header.rcode;
    if (rcode === RCODE.NXDOMAIN) return { status: "nxdomain" };
    if (rcode === RCODE.SERVFAIL) {
      throw new DnsTemporaryError(`DNS ${type} lookup for ${name}: SERVFAIL`, "servfail");
    }
    if (rcode === RCODE.REFUSED) {
      throw new DnsTemporaryError(`DNS ${type} lookup for ${name}: REFUSED`, "refused");
    }
    if (rcode !== RCODE.NOERROR) {
      throw new DnsTemporaryError(`DNS ${type} lookup for ${name}: rcode ${rcode}`, "other");
    }
    // Only records owned by the name asked for, or by a CNAME target on its
    // chain, answer the question; a record of another name is never used.
    const owners = ownersOf(name, reply.answers);
    const typed = reply.answers.filter((answer) => answer.type === TYPE[type]);
    const owned = typed.filter((answer) => owners.has(strip(answer.name)));
    if (typed.length > 0 && owned.length === 0) {
      throw new DnsTemporaryError(`DNS ${type} lookup for ${name}: the answer holds records of another name`, "other");
    }
    const records = owned
      .map(pick)
      .filter((record): record is T => record !== undefined);
    return records.length ? { status: "found", records } : { status: "nodata" };
  }

  resolveMx(domain: string): Promise<DnsLookup<MxRecord>> {
    return this.lookup(domain, "MX", (answer) => {
      const record = answer as unknown as { exchange?: string; priority?: number };
      if (typeof record.exchange !== "string") return undefined;
      return { exchange: record.exchange.replace(/\.$/, ""), priority: record.priority ?? 0 };
    });
  }

  resolve4(name: string): Promise<DnsLookup<string>> {
    return this.lookup(name, "A", (answer) => (answer as { address?: string }).address);
  }

  resolve6(name: string): Promise<DnsLookup<string>> {
    return this.lookup(name, "AAAA", (answer) => (answer as { address?: string }).address);
  }

  resolvePtr(address: string): Promise<DnsLookup<string>> {
    return this.lookup(reverseName(address), "PTR", (answer) => {
      const domain = (answer as { domain?: string }).domain;
      return domain?.replace(/\.$/, "");
    });
  }
}
