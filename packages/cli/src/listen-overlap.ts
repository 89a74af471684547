import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { parseHostPort, type LoadedConfig } from "@mailroom/core";

interface Bind {
  index: number;
  address: string;
  family: 4 | 6;
  wildcard: boolean;
  port: number;
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
 * Lists `server.listen` entries that Linux cannot bind next to an earlier
 * one, so that `start` would fail with EADDRINUSE. A wildcard address
 * (0.0.0.0 or [::]) takes its port on every address of its family, and [::]
 * takes IPv4 too while net.ipv6.bindv6only is 0. Node binds with
 * SO_REUSEADDR, and Linux still rejects the second bind (seen with Node 20).
 * Other systems are not checked, and host names and port 0 are skipped.
 */
export function findListenOverlaps(loaded: LoadedConfig, platform = process.platform): string[] {
  if (platform !== "linux") return [];
  const dualStack = ipv6TakesIpv4();
  const binds = loaded.config.server.listen.flatMap((entry, index) => toBind(index, entry.address) ?? []);
  const takes = (wildcard: Bind, other: Bind) =>
    wildcard.wildcard && (wildcard.family === other.family || (wildcard.family === 6 && dualStack));
  const problems: string[] = [];
  for (const [position, bind] of binds.entries()) {
    const earlier = binds.slice(0, position).find((other) => other.port === bind.port && (takes(other, bind) || takes(bind, other)));
    if (!earlier) continue;
    const wildcard = takes(earlier, bind) ? earlier : bind;
    const line = loaded.lineOf(["server", "listen", bind.index]);
    const reach = wildcard.family === 6 && bind.family !== earlier.family ? "every IPv6 and IPv4 address (net.ipv6.bindv6only is 0)" : "every address";
    const fix = earlier.wildcard && bind.wildcard ? `list only ${wildcard.address}` : `list ${wildcard.address} alone, or only specific addresses`;
    problems.push(
      `${loaded.file}${line ? `:${line}` : ""}: server.listen[${bind.index}]: ${bind.address} overlaps listen[${earlier.index}] ${earlier.address}, ` +
        `because on Linux ${wildcard.address} takes port ${bind.port} on ${reach}; start would fail with EADDRINUSE, so ${fix}`,
    );
  }
  return problems;
}
