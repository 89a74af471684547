import fc from "fast-check";
import ipaddr from "ipaddr.js";
import { describe, expect, test } from "vitest";
import { inNetworks, parseClientAddress, parseNetwork } from "./networks.js";

const list = (...texts: string[]) => texts.map(parseNetwork);

describe("parseNetwork", () => {
  test("reads IPv4 and IPv6 ranges", () => {
    const v4 = parseNetwork("192.0.2.0/24");
    expect(v4.address.kind()).toBe("ipv4");
    expect(v4.prefixLength).toBe(24);
    const v6 = parseNetwork("2001:db8::/32");
    expect(v6.address.kind()).toBe("ipv6");
    expect(v6.prefixLength).toBe(32);
  });

  test("takes a bare address as one host", () => {
    expect(parseNetwork("192.0.2.7").prefixLength).toBe(32);
    expect(parseNetwork("2001:db8::7").prefixLength).toBe(128);
  });

  test("turns a mapped IPv6 range into its IPv4 range", () => {
    const mapped = parseNetwork("::ffff:192.0.2.0/120");
    expect(mapped.address.kind()).toBe("ipv4");
    expect(mapped.address.toString()).toBe("192.0.2.0");
    expect(mapped.prefixLength).toBe(24);
    const all = parseNetwork("::ffff:0:0/96");
    expect(all.address.toString()).toBe("0.0.0.0");
    expect(all.prefixLength).toBe(0);
  });

  test("keeps an IPv4-compatible range as IPv6", () => {
    const compatible = parseNetwork("::198.51.100.0/120");
    expect(compatible.address.kind()).toBe("ipv6");
    expect(compatible.prefixLength).toBe(120);
  });

  test.each([
    ["10.1.2.3/8", /bits are set after the \/8 prefix; write 10\.0\.0\.0\/8/],
    ["2001:db8::1/32", /write 2001:db8::\/32/],
    ["192.0.2.0/33", /prefix length must be 0 to 32/],
    ["2001:db8::/129", /prefix length must be 0 to 128/],
    ["192.0.2.0/", /prefix length must be 0 to 32/],
    ["192.0.2.0/-1", /prefix length/],
    ["010.1.1.1", /invalid network "010\.1\.1\.1"/],
    ["1.2.3/24", /invalid network/],
    ["example.com", /invalid network/],
    ["fe80::1%eth0", /invalid network/],
    ["", /invalid network/],
  ])("rejects %j", (text, message) => {
    expect(() => parseNetwork(text)).toThrow(message);
  });
});

describe("inNetworks", () => {
  test("matches /0 for its own family only", () => {
    const v4all = list("0.0.0.0/0");
    expect(inNetworks(v4all, "203.0.113.9")).toBe(true);
    expect(inNetworks(v4all, "0.0.0.0")).toBe(true);
    expect(inNetworks(v4all, "255.255.255.255")).toBe(true);
    expect(inNetworks(v4all, "2001:db8::1")).toBe(false);

    const v6all = list("::/0");
    expect(inNetworks(v6all, "2001:db8::1")).toBe(true);
    expect(inNetworks(v6all, "::1")).toBe(true);
    expect(inNetworks(v6all, "203.0.113.9")).toBe(false);
    expect(inNetworks(v6all, "::ffff:203.0.113.9")).toBe(false);
  });

  test("matches /32 exactly", () => {
    const host = list("198.51.100.7/32");
    expect(inNetworks(host, "198.51.100.7")).toBe(true);
    expect(inNetworks(host, "198.51.100.6")).toBe(false);
    expect(inNetworks(host, "198.51.100.8")).toBe(false);
  });

  test("matches /128 exactly", () => {
    const host = list("2001:db8::7/128");
    expect(inNetworks(host, "2001:db8::7")).toBe(true);
    expect(inNetworks(host, "2001:db8:0:0:0:0:0:7")).toBe(true);
    expect(inNetworks(host, "2001:db8::6")).toBe(false);
    expect(inNetworks(host, "2001:db8::8")).toBe(false);
  });

  test("includes both ends of a range", () => {
    const range = list("192.0.2.0/24");
    expect(inNetworks(range, "192.0.2.0")).toBe(true);
    expect(inNetworks(range, "192.0.2.255")).toBe(true);
    expect(inNetworks(range, "192.0.1.255")).toBe(false);
    expect(inNetworks(range, "192.0.3.0")).toBe(false);

    const v6 = list("2001:db8::/32");
    expect(inNetworks(v6, "2001:db8::")).toBe(true);
    expect(inNetworks(v6, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(true);
    expect(inNetworks(v6, "2001:db9::")).toBe(false);
    expect(inNetworks(v6, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff")).toBe(false);
  });

  test("matches mapped IPv6 clients against IPv4 ranges", () => {
    const range = list("198.51.100.0/24");
    expect(inNetworks(range, "::ffff:198.51.100.7")).toBe(true);
    expect(inNetworks(range, "::FFFF:198.51.100.7")).toBe(true);
    expect(inNetworks(range, "::ffff:c633:6407")).toBe(true);
    expect(inNetworks(range, "::ffff:198.51.101.7")).toBe(false);
    expect(inNetworks(list("::ffff:198.51.100.0/120"), "198.51.100.7")).toBe(true);
  });

  test("keeps IPv4-compatible and NAT64 addresses apart from IPv4", () => {
    const range = list("198.51.100.0/24");
    expect(inNetworks(range, "::198.51.100.7")).toBe(false);
    expect(inNetworks(range, "64:ff9b::198.51.100.7")).toBe(false);
  });

  test("matches loopback of both families", () => {
    const loopback = list("127.0.0.0/8", "::1");
    expect(inNetworks(loopback, "127.0.0.1")).toBe(true);
    expect(inNetworks(loopback, "127.255.255.254")).toBe(true);
    expect(inNetworks(loopback, "::1")).toBe(true);
    expect(inNetworks(loopback, "::2")).toBe(false);
  });

  test("matches a link-local client with a zone id", () => {
    expect(inNetworks(list("fe80::/10"), "fe80::1%eth0")).toBe(true);
  });

  test("matches nothing with no networks or a bad address", () => {
    expect(inNetworks([], "127.0.0.1")).toBe(false);
    expect(inNetworks(list("0.0.0.0/0", "::/0"), "")).toBe(false);
    expect(inNetworks(list("0.0.0.0/0", "::/0"), "not-an-ip")).toBe(false);
    expect(inNetworks(list("0.0.0.0/0"), "010.1.1.1")).toBe(false);
  });
});

test("parseClientAddress unwraps mapped addresses", () => {
  expect(parseClientAddress("::ffff:192.0.2.1")?.toString()).toBe("192.0.2.1");
  expect(parseClientAddress("2001:db8::1")?.kind()).toBe("ipv6");
  expect(parseClientAddress("nonsense")).toBeUndefined();
});

test("IPv4 number match agrees with ipaddr.js", () => {
  const octets = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((parts) => parts.join("."));
  fc.assert(
    fc.property(octets, octets, fc.integer({ min: 0, max: 32 }), (client, base, prefixLength) => {
      const range = ipaddr.IPv4.networkAddressFromCIDR(`${base}/${prefixLength}`).toString();
      const network = parseNetwork(`${range}/${prefixLength}`);
      const expected = ipaddr.IPv4.parse(client).match(network.address, prefixLength);
      expect(inNetworks([network], client)).toBe(expected);
    }),
    { numRuns: 2000 },
  );
});
