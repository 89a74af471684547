import { describe, expect, test } from "vitest";
import { parseProxyHeader } from "./proxy-header.js";

describe("parseProxyHeader", () => {
  test.each([
    ["PROXY TCP4 198.51.100.7 192.0.2.1 5555 25", "198.51.100.7", 5555],
    ["PROXY TCP6 2001:db8::7 2001:db8::1 0 587", "2001:db8::7", 0],
    ["PROXY TCP6 ::ffff:198.51.100.7 ::1 65535 25", "::ffff:198.51.100.7", 65535],
  ])("%s names the client", (line, remoteAddress, remotePort) => {
    expect(parseProxyHeader(line)).toEqual({ remoteAddress, remotePort });
  });

  test.each([
    ["PROXY garbage", /unknown protocol "garbage"/],
    ["PROXY", /unknown protocol ""/],
    ["PROXY UNKNOWN", /PROXY UNKNOWN, which names no client address/],
    ["PROXY UNKNOWN 198.51.100.7 192.0.2.1 5555 25", /PROXY UNKNOWN/],
    ["proxy TCP4 198.51.100.7 192.0.2.1 5555 25", /does not start with PROXY/],
    ["EHLO client.test", /does not start with PROXY/],
    ["PROXY TCP4 198.51.100.7 192.0.2.1 5555", /expected 6 fields/],
    ["PROXY TCP4 198.51.100.7  192.0.2.1 5555 25", /expected 6 fields/],
    ["PROXY TCP4 198.51.100.7 192.0.2.1 5555 25 extra", /expected 6 fields/],
    ["PROXY TCP4 2001:db8::7 192.0.2.1 5555 25", /not both IPv4 addresses/],
    ["PROXY TCP6 198.51.100.7 2001:db8::1 5555 25", /not both IPv6 addresses/],
    ["PROXY TCP4 mx.example 192.0.2.1 5555 25", /not both IPv4 addresses/],
    ["PROXY TCP4 198.51.100.7 192.0.2.1 70000 25", /invalid port "70000"/],
    ["PROXY TCP4 198.51.100.7 192.0.2.1 5555 -1", /invalid port "-1"/],
    ["PROXY TCP4 198.51.100.7 192.0.2.1 5a55 25", /invalid port "5a55"/],
  ])("%j is rejected", (line, reason) => {
    const result = parseProxyHeader(line);
    expect(result).toHaveProperty("reason");
    expect((result as { reason: string }).reason).toMatch(reason);
  });
});
