import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { ConfigError, parseHostPort, repeatedListenAddresses, type LoadedConfig } from "@mailroom/core";
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

/**
 * Fails before any plugin starts on listen addresses that cannot be bound
 * together: `--listen` values given twice or overlapping (a usage error),
 * or without `--listen`, on Linux, `server.listen` entries that overlap (a
 * config error). The config schema already rejects a `server.listen` entry
 * given twice.
 */
export function checkListenAddresses(loaded: LoadedConfig, listen?: readonly string[]): void {
  if (listen) {
    const problems = findListenOptionProblems(listen);
    if (problems.length > 0) throw new UsageError(problems.join("\n"));
    return;
  }
  const overlaps = findListenOverlaps(loaded);
  if (overlaps.length > 0) throw new ConfigError(overlaps.join("\n"));
}
