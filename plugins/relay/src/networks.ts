import net from "node:net";
import ipaddr from "ipaddr.js";

type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;

/** A CIDR range from the config, kept with the text it was written as. */
export interface Network {
  /** The range as configured, for log messages. */
  readonly text: string;
  readonly address: IpAddress;
  readonly prefixLength: number;
  /** An IPv4 range as 32-bit numbers, for a match without parsing the client with ipaddr.js. */
  readonly ipv4?: { readonly base: number; readonly mask: number };
}

/**
 * Parses a CIDR range (`192.0.2.0/24`, `2001:db8::/32`) or a single address
 * (taken as /32 or /128). IPv4 must be four decimal parts, because ipaddr.js
 * alone would read `010.1.1.1` as octal. A range with bits set after the
 * prefix is rejected: `10.1.2.3/8` is more likely a typo for /32 than a wish
 * to trust 16 million hosts. An IPv4-mapped IPv6 range (`::ffff:0:0/96` and
 * longer) becomes the IPv4 range it covers.
 * Throws an Error whose message names the value and the expected form.
 */
export function parseNetwork(text: string): Network {
  const trimmed = text.trim();
  const slash = trimmed.indexOf("/");
  const addressText = slash === -1 ? trimmed : trimmed.slice(0, slash);
  const prefixText = slash === -1 ? undefined : trimmed.slice(slash + 1);

  const family = net.isIPv4(addressText) ? 4 : net.isIPv6(addressText) ? 6 : 0;
  if (family === 0 || addressText.includes("%")) {
    throw new Error(
      `invalid network "${text}": expected an IPv4 or IPv6 address with an optional prefix length, such as 192.0.2.0/24 or 2001:db8::/32`,
    );
  }
  const maxPrefix = family === 4 ? 32 : 128;
  let prefixLength = maxPrefix;
  if (prefixText !== undefined) {
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > maxPrefix) {
      throw new Error(
        `invalid network "${text}": the prefix length must be 0 to ${maxPrefix}`,
      );
    }
    prefixLength = Number(prefixText);
  }

  let address: IpAddress = parseIp(addressText);
  const base = networkAddress(address, prefixLength);
  if (base.toString() !== address.toString()) {
    throw new Error(
      `invalid network "${text}": bits are set after the /${prefixLength} prefix; write ${base.toString()}/${prefixLength} for the whole range, or the bare address for one host`,
    );
  }

  if (address.kind() === "ipv6" && prefixLength >= 96) {
    const v6 = address as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) {
      address = v6.toIPv4Address();
      prefixLength -= 96;
    }
  }
  if (address.kind() === "ipv4") {
    const base = ipv4Number(address.toString())!;
    const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
    return { text: trimmed, address, prefixLength, ipv4: { base, mask } };
  }
  return { text: trimmed, address, prefixLength };
}

/** Reads a dotted-quad IPv4 address as a 32-bit number; undefined for any other text. */
function ipv4Number(text: string): number | undefined {
  if (!net.isIPv4(text)) return undefined;
  let value = 0;
  for (const part of text.split(".")) value = value * 256 + Number(part);
  return value;
}

/** Clears every bit after the prefix. */
function networkAddress(address: IpAddress, prefixLength: number): IpAddress {
  const bytes = address.toByteArray();
  for (let bit = prefixLength; bit < bytes.length * 8; bit++) {
    const index = Math.floor(bit / 8);
    bytes[index] = bytes[index]! & ~(0x80 >> bit % 8);
  }
  return ipaddr.fromByteArray(bytes);
}

/**
 * Parses an address that net.isIP accepted. ipaddr.js 2.5.0 reads the
 * IPv4-compatible `::192.0.2.1` as the IPv4-mapped `::ffff:c000:201`, so an
 * embedded IPv4 tail is rewritten as two hex groups first.
 */
export function parseIp(text: string): IpAddress {
  if (!net.isIPv6(text)) return ipaddr.IPv4.parse(text);
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (!tail) return ipaddr.IPv6.parse(text);
  const [a, b, c, d] = tail.slice(1).map(Number) as [number, number, number, number];
  const hex = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  return ipaddr.IPv6.parse(text.slice(0, tail.index) + hex);
}

/**
 * Parses a client address as a socket or a PROXY header reports it. An
 * IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, seen on dual-stack sockets)
 * becomes its IPv4 address, so it matches IPv4 ranges. Returns undefined for
 * text that is not an IP address.
 */
export function parseClientAddress(text: string): IpAddress | undefined {
  const withoutZone = text.replace(/%.*$/, "");
  if (!net.isIP(withoutZone)) return undefined;
  const address = parseIp(withoutZone);
  if (address.kind() === "ipv6" && (address as ipaddr.IPv6).isIPv4MappedAddress()) {
    return (address as ipaddr.IPv6).toIPv4Address();
  }
  return address;
}

/**
 * Returns true when the client address lies in one of the networks. IPv4
 * clients match only IPv4 ranges and IPv6 clients only IPv6 ranges, so
 * `::/0` does not cover IPv4 clients.
 */
export function inNetworks(networks: readonly Network[], client: string): boolean {
  // Most clients are plain IPv4: compare numbers; the rest goes through ipaddr.js.
  const number = ipv4Number(client);
  if (number !== undefined) {
    return networks.some((network) => network.ipv4 !== undefined && ((number & network.ipv4.mask) >>> 0) === network.ipv4.base);
  }
  const address = parseClientAddress(client);
  if (!address) return false;
  return networks.some(
    (network) =>
      network.address.kind() === address.kind() &&
      address.match(network.address, network.prefixLength),
  );
}

/** Returns true when the range covers a whole address family (prefix /0). */
export function coversEverything(network: Network): boolean {
  return network.prefixLength === 0;
}
