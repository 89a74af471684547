import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { ConfigError, metricsTarget, parseHostPort, repeatedListenAddresses, type LoadedConfig } from "@mailroom/core";
import { UsageError } from "./report.js";

interface Bind {
  index: number;
  address: string;
  family: 4 | 6;
  wildcard: boolean;
  port: number;
}

/** A listen address that Linux cannot bind next to an earlier one. */
interface Overlap {
  bind: Bind;
  earlier: Bind;
  /** The addresses that the wildcard of the pair takes its port on. */
  reach: string;
  /** The advice on which addresses to list instead. */
  fix: string;
  wildcard: Bind;
}

/** True unless net.ipv6.bindv6only is 1; with 0 (the Linux default) a socket on [::] takes IPv4 too. */
function ipv6TakesIpv4(): boolean {
  try {
    return readFileSync("/proc/sys/net/ipv6/bindv6only", "utf8").trim() !== "1";
  } catch {
    return true;
  }
}

function toBind(index: number, address: string): Bind | undefined {
  const target = parseHostPort(address);
  if (!target || target.port === 0) return undefined;
  const family = isIP(target.host);
  if (family === 0) return undefined;
  const wildcard = family === 4 ? target.host === "0.0.0.0" : new URL(`http://[${target.host}]/`).hostname === "[::]";
  return { index, address, family: family as 4 | 6, wildcard, port: target.port };
}

/**
 * Finds the listen addresses that Linux cannot bind next to an earlier one,
 * so that `start` would fail with EADDRINUSE. A wildcard address (0.0.0.0
 * or [::]) takes its port on every address of its family, and [::] takes
 * IPv4 too while net.ipv6.bindv6only is 0. Node binds with SO_REUSEADDR,
 * and Linux still rejects the second bind (seen with Node 20). Other
 * systems are not checked, and host names and port 0 are skipped.
 */
function findOverlaps(addresses: readonly string[], platform: NodeJS.Platform): Overlap[] {
  if (platform !== "linux") return [];
  const dualStack = ipv6TakesIpv4();
  const binds = addresses.flatMap((address, index) => toBind(index, address) ?? []);
  const takes = (wildcard: Bind, other: Bind) =>
    wildcard.wildcard && (wildcard.family === other.family || (wildcard.family === 6 && dualStack));
  const overlaps: Overlap[] = [];
  for (const [position, bind] of binds.entries()) {
    const earlier = binds.slice(0, position).find((other) => other.port === bind.port && (takes(other, bind) || takes(bind, other)));
    if (!earlier) continue;
    const wildcard = takes(earlier, bind) ? earlier : bind;
    const reach = wildcard.family === 6 && bind.family !== earlier.family ? "every IPv6 and IPv4 address (net.ipv6.bindv6only is 0)" : "every address";
    const fix = earlier.wildcard && bind.wildcard ? `list only ${wildcard.address}` : `list ${wildcard.address} alone, or only specific addresses`;
    overlaps.push({ bind, earlier, reach, fix, wildcard });
  }
  return overlaps;
}

/** Lists the `server.listen` entries of a config that Linux cannot bind next to an earlier one, with file and line. */
export function findListenOverlaps(loaded: LoadedConfig, platform = process.platform): string[] {
  const addresses = loaded.config.server.listen.map((entry) => entry.address);
  return findOverlaps(addresses, platform).map(({ bind, earlier, reach, fix, wildcard }) => {
    const line = loaded.lineOf(["server", "listen", bind.index]);
    return (
      `${loaded.file}${line ? `:${line}` : ""}: server.listen[${bind.index}]: ${bind.address} overlaps listen[${earlier.index}] ${earlier.address}, ` +
      `because on Linux ${wildcard.address} takes port ${bind.port} on ${reach}; start would fail with EADDRINUSE, so ${fix}`
    );
  });
}

/**
 * Lists the `--listen` values that cannot be bound together: an address
 * given twice, in any spelling, and on Linux the overlaps that
 * findListenOverlaps reports for `server.listen`.
 */
export function findListenOptionProblems(addresses: readonly string[], platform = process.platform): string[] {
  const repeats = repeatedListenAddresses(addresses);
  const repeated = repeats.map(({ index, first }) => {
    const address = addresses[index]!;
    const twice = address === addresses[first] ? `--listen ${address} is given twice` : `--listen ${address} is the same address as --listen ${addresses[first]}`;
    return `${twice}; the second listener would fail with EADDRINUSE, so give each address once`;
  });
  // Two equal wildcards overlap too, and the message above covers them.
  const reported = new Set(repeats.map(({ index }) => index));
  const overlaps = findOverlaps(addresses, platform)
    .filter(({ bind }) => !reported.has(bind.index))
    .map(
    ({ bind, earlier, reach, fix, wildcard }) =>
      `--listen ${bind.address} overlaps --listen ${earlier.address}, because on Linux ${wildcard.address} takes port ${bind.port} on ${reach}; ` +
      `the second listener would fail with EADDRINUSE, so ${fix}`,
  );
  return [...repeated, ...overlaps];
}

/** Formats a host and port as `host:port`, with an IPv6 host in brackets. */
function joinHostPort(target: { host: string; port: number }): string {
  return isIP(target.host) === 6 ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}

/**
 * Lists the metrics addresses that an SMTP listener takes too, so that
 * `start` would fail with EADDRINUSE: the same address in any spelling on
 * every system, and on Linux a wildcard overlap as findListenOverlaps finds
 * it. With `server.workers` the worker in slot i serves metrics on the
 * configured port plus i - 1, so every worker's port is checked. `listen`
 * is the `--listen` values, which replace `server.listen` when given.
 */
export function findMetricsClashes(loaded: LoadedConfig, listen?: readonly string[], platform = process.platform): string[] {
  const { metrics, workers } = loaded.config.server;
  if (!metrics) return [];
  const listeners = listen
    ? listen.map((address) => ({ address, name: `--listen ${address}` }))
    : loaded.config.server.listen.map((entry, index) => ({ address: entry.address, name: `listen[${index}] ${entry.address}` }));
  const line = loaded.lineOf(["server", "metrics", "listen"]);
  const prefix = `${loaded.file}${line ? `:${line}` : ""}: server.metrics.listen: `;
  const problems: string[] = [];
  for (let slot = 1; slot <= workers; slot++) {
    let address: string;
    try {
      address = joinHostPort(metricsTarget(metrics.listen, slot - 1));
    } catch {
      // A port past 65535; the worker fails to serve metrics with its own message.
      continue;
    }
    const subject =
      slot === 1 ? address : `the worker in slot ${slot} serves metrics on ${address} (the port of server.metrics.listen + ${slot - 1}), which`;
    for (const listener of listeners) {
      let clash: string | undefined;
      if (repeatedListenAddresses([listener.address, address]).length > 0) {
        clash = `${subject} is also the address of the SMTP listener ${listener.name}`;
      } else {
        const [overlap] = findOverlaps([listener.address, address], platform);
        if (overlap) {
          clash =
            `${subject} overlaps the SMTP listener ${listener.name}, ` +
            `because on Linux ${overlap.wildcard.address} takes port ${overlap.bind.port} on ${overlap.reach}`;
        }
      }
      if (clash) problems.push(`${prefix}${clash}; start would fail with EADDRINUSE, so give the metrics server a port that no listener uses`);
    }
  }
  return problems;
}

/**
 * Fails before any plugin starts on listen addresses that cannot be bound
 * together: `--listen` values given twice or overlapping (a usage error),
 * or without `--listen`, on Linux, `server.listen` entries that overlap (a
 * config error). The config schema already rejects a `server.listen` entry
 * given twice. A metrics address that an SMTP listener takes too is the
 * same kind of error as the listener's: a usage error for `--listen`, else
 * a config error.
 */
export function checkListenAddresses(loaded: LoadedConfig, listen?: readonly string[]): void {
  const clashes = findMetricsClashes(loaded, listen);
  if (listen) {
    const problems = [...findListenOptionProblems(listen), ...clashes];
    if (problems.length > 0) throw new UsageError(problems.join("\n"));
    return;
  }
  const problems = [...findListenOverlaps(loaded), ...clashes];
  if (problems.length > 0) throw new ConfigError(problems.join("\n"));
}
