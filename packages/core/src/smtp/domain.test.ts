import { describe, expect, test } from "vitest";
import { asciiDomainAddress, checkDomainName, domainName, isAsciiText, normalizeDomain } from "./domain.js";

describe("normalizeDomain", () => {
  test.each([
    ["Local.Example", "local.example"],
    ["local.example.", "local.example"],
    [" local.example ", "local.example"],
    ["Bücher.Example", "xn--bcher-kva.example"],
    ["bücher.example", "xn--bcher-kva.example"],
    ["xn--bcher-kva.example", "xn--bcher-kva.example"],
    ["XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"],
    ["münchen.example", "xn--mnchen-3ya.example"],
    ["mail.münchen.example.", "mail.xn--mnchen-3ya.example"],
    ["faß.example", "xn--fa-hia.example"],
    ["ＡＢＣ.example", "abc.example"],
    ["0x7f.1", "0x7f.1"],
    ["example.123", "example.123"],
    ["[192.0.2.1]", "[192.0.2.1]"],
    ["[IPv6:2001:DB8:0::1]", "[ipv6:2001:db8::1]"],
    ["[IPv6:2001:db8:0:0:1:0:0:1]", "[ipv6:2001:db8::1:0:0:1]"],
    ["", ""],
  ])("normalizes %j", (input, expected) => {
    expect(normalizeDomain(input)).toBe(expected);
  });

  test.each([
    " ",
    ".",
    "local..example",
    "a b.example",
    "user@local.example",
    "[999.0.0.1]",
    "xn--zz.example",
    "xn--a.example",
    "\u200d.example",
    "\u2488.example",
    "\u0301a.example",
  ])("rejects %j", (input) => {
    expect(normalizeDomain(input)).toBeNull();
  });

  test("rejects a U-label whose A-label is longer than 63 octets", () => {
    // 21 CJK characters far apart are 63 octets in UTF-8 and 67 as an A-label.
    const label = Array.from({ length: 21 }, (_, i) => String.fromCodePoint(0x4e00 + i * 997)).join("");
    expect(Buffer.byteLength(label)).toBe(63);
    expect(normalizeDomain(`${label}.example`)).toBeNull();
  });

  test("gives the same answer from its cache", () => {
    for (let i = 0; i < 3; i++) expect(normalizeDomain("Bücher.Example")).toBe("xn--bcher-kva.example");
  });
});

describe("checkDomainName", () => {
  test("returns the normalized domain", () => {
    expect(checkDomainName("Bücher.Example.")).toEqual({ domain: "xn--bcher-kva.example" });
  });

  test("explains a name that is not a domain", () => {
    expect(checkDomainName("bad domain")).toEqual({
      error: 'invalid domain "bad domain": expected a domain name such as example.com',
    });
  });

  test("explains an international name that fails IDNA", () => {
    const checked = checkDomainName("xn--zz.example") as { error: string };
    expect(checked.error).toMatch(/^invalid international domain name "xn--zz\.example": .*IDNA/);
  });

  test("accepts address literals only when asked", () => {
    expect(checkDomainName("[192.0.2.1]")).toHaveProperty("error");
    expect(checkDomainName("[192.0.2.1]", { literals: true })).toEqual({ domain: "[192.0.2.1]" });
  });

  test("literal with trailing dot is a syntax error", () => {
    expect(checkDomainName("[192.0.2.1].", { literals: true })).toEqual({
      error:
        'invalid domain "[192.0.2.1].": expected a domain name such as example.com or an address literal such as [192.0.2.1]',
    });
  });

  test("rejects the empty name", () => {
    expect(checkDomainName("")).toHaveProperty("error");
  });
});

describe("domainName schema", () => {
  test("outputs the normalized form", () => {
    expect(domainName().parse("München.Example")).toBe("xn--mnchen-3ya.example");
  });

  test("reports the reason as the issue message", () => {
    const result = domainName().safeParse("xn--zz.example");
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toMatch(/invalid international domain name/);
  });
});

describe("asciiDomainAddress", () => {
  test.each([
    ["bob@bücher.example", "bob@xn--bcher-kva.example"],
    ['"b o b"@bücher.example', '"b o b"@xn--bcher-kva.example'],
    ["bob@xn--bcher-kva.example", "bob@xn--bcher-kva.example"],
    ["bøb@bücher.example", "bøb@bücher.example"],
    ["bob@[192.0.2.1]", "bob@[192.0.2.1]"],
    ["postmaster", "postmaster"],
    ["bob@xn--zz.bücher.example", "bob@xn--zz.bücher.example"],
  ])("%s", (address, expected) => {
    expect(asciiDomainAddress(address)).toBe(expected);
  });
});

describe("isAsciiText", () => {
  test.each([
    ["", true],
    ["plain \x00\x7f text", true],
    ["caf\u00e9", false],
    ["\u0080", false],
    ["\ud83d", false],
  ])("%j", (text, expected) => {
    expect(isAsciiText(text)).toBe(expected);
  });
});
