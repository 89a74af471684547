import { randomInt } from "node:crypto";
import net from "node:net";
import os from "node:os";
import {
  DnsTemporaryError,
  normalizeDomain,
  type DnsResolver,
  type HookService,
  type Logger,
  type MxHost,
  type OutboundContext,
} from "@mailroom/core";
import type { MxOptions, Target, TlsMode } from "./options.js";

/** One mail exchanger with the addresses to try, in order. */
export interface Hop {
  name: string;
  addresses: string[];
  port: number;
  tls: TlsMode;
  /** Verify the certificate against `name` (tls.requireFor). */
  verify: boolean;
  auth?: { user: string; pass: string };
}

/** A failure that applies to every recipient of the domain. */
export interface RouteFailure {
  permanent: boolean;
  code: number;
  enhanced: string;
  message: string;
}

export type Route = { kind: "hops"; hops: Hop[] } | ({ kind: "failure" } & RouteFailure);

function failure(permanent: boolean, code: number, enhanced: string, message: string): Route {
  return { kind: "failure", permanent, code, enhanced, message };
}

/** Shuffles the records of equal preference, keeping the preference order. */
export function orderByPreference<T extends { priority: number }>(records: T[]): T[] {
  const groups = new Map<number, T[]>();
  for (const record of records) {
    const group = groups.get(record.priority) ?? [];
    group.push(record);
    groups.set(record.priority, group);
  }
  const ordered: T[] = [];
  for (const priority of [...groups.keys()].sort((a, b) => a - b)) {
    const group = groups.get(priority)!;
    for (let i = group.length - 1; i > 0; i--) {
      const j = randomInt(i + 1);
      [group[i], group[j]] = [group[j]!, group[i]!];
    }
    ordered.push(...group);
  }
  return ordered;
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

const LOCAL = new net.BlockList();
LOCAL.addSubnet("127.0.0.0", 8, "ipv4");
LOCAL.addAddress("0.0.0.0", "ipv4");
LOCAL.addAddress("::1", "ipv6");
LOCAL.addAddress("::", "ipv6");

/** True for loopback, unspecified and this host's own interface addresses. */
export function isLocalAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const plain = mapped ? mapped[1]! : address.toLowerCase();
  const family = net.isIPv4(plain) ? "ipv4" : net.isIPv6(plain) ? "ipv6" : undefined;
  if (!family) return false;
  if (LOCAL.check(plain, family)) return true;
  const own = new net.BlockList();
  for (const entries of Object.values(os.networkInterfaces())) {
    for (const entry of entries ?? []) {
      own.addAddress(entry.address.replace(/%.*$/, ""), entry.family === "IPv6" ? "ipv6" : "ipv4");
    }
  }
  return own.check(plain, family);
}

/** Returns a host name or address with the brackets and `IPv6:` tag of an address literal removed. */
function bareHost(name: string): string {
  return name.replace(/^\[(.*)\]$/, "$1").replace(/^ipv6:/i, "");
}

/**
 * Describes a route host that the loop guard rejects, where that is known
 * without DNS: an address that isLocalAddress matches, or a localhost name,
 * which RFC 6761 section 6.3 reserves for loopback. Returns undefined for
 * any other host.
 */
export function describeLocalHost(host: string): string | undefined {
  const bare = bareHost(host);
  if (net.isIP(bare)) {
    if (!isLocalAddress(bare)) return undefined;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
    const plain = mapped ? mapped[1]! : bare;
    const family = net.isIPv4(plain) ? "ipv4" : "ipv6";
    if (LOOPBACK.check(plain, family)) return "a loopback address";
    if (LOCAL.check(plain, family)) return "the unspecified address";
    return "an address of this host";
  }
  const name = host.toLowerCase().replace(/\.$/, "");
  if (name === "localhost" || name.endsWith(".localhost")) return "a loopback name";
  return undefined;
}

interface RoutingEnv {
  options: MxOptions;
  dns: () => DnsResolver;
  hooks: () => HookService | undefined;
  logger: Logger;
}

/** Looks up a host's AAAA then A addresses. Temporary DNS failures are reported, not thrown. */
async function addressesOf(
  dns: DnsResolver,
  name: string,
): Promise<{ addresses: string[]; temporary?: string }> {
  const bare = bareHost(name);
  if (net.isIP(bare)) return { addresses: [bare] };
  const addresses: string[] = [];
  let temporary: string | undefined;
  for (const lookup of [dns.resolve6.bind(dns), dns.resolve4.bind(dns)]) {
    try {
      const result = await lookup(name);
      if (result.status === "found") addresses.push(...result.records);
    } catch (error) {
      if (!(error instanceof DnsTemporaryError)) throw error;
      temporary = error.message;
    }
  }
  return { addresses, ...(temporary ? { temporary } : {}) };
}

function hopFromTarget(target: Target, addresses: string[], verify: boolean): Hop {
  return {
    name: target.host,
    addresses,
    port: target.port,
    tls: verify ? "required" : target.tls,
    verify,
    ...(target.auth ? { auth: target.auth } : {}),
  };
}

/**
 * Finds where mail for `domain` goes: a get_mx answer, a static route, the
 * smarthost, or DNS (RFC 5321 section 5.1, RFC 7505), with the loop guard
 * applied to every address. Routes, `tls.requireFor` and DNS see the domain
 * in the form of normalizeDomain, so an international domain is looked up by
 * its A-labels.
 */
export async function route(written: string, context: OutboundContext, env: RoutingEnv): Promise<Route> {
  const { options } = env;
  // Records that older versions queued may hold U-labels or capitals.
  const domain = normalizeDomain(written) ?? written.toLowerCase();
  const verify = options.tls.requireFor.includes(domain);
  const dns = env.dns();

  const hooks = env.hooks();
  if (hooks) {
    const outcome = await hooks.run("get_mx", { message: context }, env.logger);
    if (outcome.kind === "error") return failure(false, 451, "4.3.0", "get_mx hook failed");
    if (outcome.kind === "answer") {
      const answer = outcome.answer;
      if (answer.verdict === "DENY" || answer.verdict === "DENYDISCONNECT") {
        return failure(true, answer.code ?? 550, answer.enhanced ?? "5.4.4", answer.message ?? "Refused by policy");
      }
      if (answer.verdict !== "OK") {
        return failure(false, answer.code ?? 451, answer.enhanced ?? "4.4.3", answer.message ?? "Deferred by policy");
      }
      if (answer.mx?.length) return hopsFromMx(answer.mx, domain, verify, dns, env, true);
    }
  }

  const target = options.routes[domain] ?? options.smarthost;
  if (target) {
    const found = await addressesOf(dns, target.host);
    const addresses = target.allowLocal ? found.addresses : guard(found.addresses, env);
    if (addresses.length === 0) {
      if (found.temporary) return failure(false, 451, "4.4.3", `route ${target.host}: ${found.temporary}`);
      if (found.addresses.length) {
        const option = options.routes[domain] ? `routes["${domain}"]` : "smarthost";
        return routeLoop(domain, option, target.host, found.addresses, env.logger);
      }
      return failure(false, 451, "4.4.4", `route host ${target.host} has no address`);
    }
    return { kind: "hops", hops: [hopFromTarget(target, addresses, verify)] };
  }

  const literal = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(domain);
  if (literal) {
    const addresses = guard([literal[1]!], env);
    if (addresses.length === 0) return loop(domain);
    return { kind: "hops", hops: [{ name: literal[1]!, addresses, port: options.port, tls: verify ? "required" : "opportunistic", verify }] };
  }

  let mx;
  try {
    mx = await dns.resolveMx(domain);
  } catch (error) {
    if (error instanceof DnsTemporaryError) {
      return failure(false, 451, "4.4.3", `MX lookup for ${domain} failed temporarily: ${error.reason}`);
    }
    throw error;
  }
  if (mx.status === "nxdomain") return failure(true, 550, "5.1.2", `Domain ${domain} does not exist`);
  if (mx.status === "nodata") {
    // No MX record: the domain itself is the mail exchanger (implicit MX).
    return hopsFromMx([{ exchange: domain, priority: 0 }], domain, verify, dns, env, false);
  }
  if (mx.records.some((record) => record.exchange === "" || record.exchange === ".")) {
    return failure(true, 556, "5.1.10", `Domain ${domain} does not accept mail (null MX)`);
  }
  return hopsFromMx(mx.records, domain, verify, dns, env, false);
}

function guard(addresses: string[], env: RoutingEnv): string[] {
  if (env.options.allowLocalDestinations) return addresses;
  return addresses.filter((address) => !isLocalAddress(address));
}

function loop(name: string): Route {
  return failure(true, 554, "5.4.6", `Mail for ${name} loops back to this host`);
}

/**
 * Defers mail whose configured route or smarthost resolves only to this
 * host. A loop through DNS or an address literal bounces, because the
 * destination or the sender chose this host. This loop is a mistake in this
 * server's own config, so the mail waits in the queue while an administrator
 * fixes the route, and bounces only after maxQueueLifetime.
 */
function routeLoop(domain: string, option: string, host: string, addresses: string[], logger: Logger): Route {
  logger.warn(
    { domain, option, host, addresses },
    "route host is this host, so the loop guard defers its mail. Set allowLocal: true on the route if a local service listens there",
  );
  return failure(
    false,
    451,
    "4.4.6",
    `${option} host ${host} is this host (${addresses.join(", ")}), which the loop guard rejects unless ${option}.allowLocal is true`,
  );
}

/**
 * Builds the hops for MX records (or the hosts of a get_mx answer), most
 * preferred first. RFC 5321 section 5.1: once this host is among them (a
 * host with an address that the loop guard refuses), that record and every
 * record of equal or higher preference value are discarded. When no record
 * is left, the mail loops back (554 5.4.6). The hops carry at most
 * `maxMxAddresses` addresses, and once they have that many, records of a
 * higher preference value are not looked up.
 */
async function hopsFromMx(
  records: MxHost[],
  domain: string,
  verify: boolean,
  dns: DnsResolver,
  env: RoutingEnv,
  fromHook: boolean,
): Promise<Route> {
  const candidates: { priority: number; hop: Hop }[] = [];
  const temporaries: { priority: number; reason: string }[] = [];
  let selfPreference: number | undefined;
  const limit = env.options.maxMxAddresses;
  let addressCount = 0;
  for (const record of orderByPreference(records)) {
    // The order is by preference, so every record from here on is discarded too.
    if (selfPreference !== undefined && record.priority >= selfPreference) break;
    // Records of the last kept preference are still looked up, because this
    // host among them would discard the candidates of that preference.
    const last = candidates.at(-1);
    if (addressCount >= limit && last && record.priority > last.priority) break;
    const found = await addressesOf(dns, record.exchange);
    if (found.temporary) temporaries.push({ priority: record.priority, reason: found.temporary });
    const addresses = guard(found.addresses, env);
    if (addresses.length < found.addresses.length) {
      selfPreference = record.priority;
      continue;
    }
    if (addresses.length === 0) continue;
    addressCount += addresses.length;
    candidates.push({
      priority: record.priority,
      hop: {
        name: record.exchange,
        addresses,
        port: record.port ?? env.options.port,
        tls: verify ? "required" : "opportunistic",
        verify,
      },
    });
  }
  const isKept = (priority: number) => selfPreference === undefined || priority < selfPreference;
  const hops = limitAddresses(
    candidates.filter((candidate) => isKept(candidate.priority)).map((candidate) => candidate.hop),
    limit,
  );
  if (hops.length > 0) return { kind: "hops", hops };
  const temporary = temporaries.find((item) => isKept(item.priority));
  if (temporary) return failure(false, 451, "4.4.3", `no mail exchanger of ${domain} resolved: ${temporary.reason}`);
  if (selfPreference !== undefined) return loop(domain);
  const what = fromHook ? "the hosts from get_mx" : "its mail exchangers";
  return failure(true, 554, "5.4.4", `No usable host for ${domain}: ${what} have no address`);
}

/** Keeps the first `limit` addresses of the hops, in order, and drops the hops left without one. */
function limitAddresses(hops: Hop[], limit: number): Hop[] {
  const kept: Hop[] = [];
  let left = limit;
  for (const hop of hops) {
    if (left === 0) break;
    const addresses = hop.addresses.slice(0, left);
    left -= addresses.length;
    kept.push({ ...hop, addresses });
  }
  return kept;
}
