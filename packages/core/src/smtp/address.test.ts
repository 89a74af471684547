import { describe, expect, test } from "vitest";
import {
  formatAddress,
  parseDomain,
  parseParameters,
  parsePath,
  splitPathArgument,
  type Address,
} from "./address.js";

const RECIPIENT = { sender: false, utf8: false };
const SENDER = { sender: true, utf8: false };
const UTF8 = { sender: false, utf8: true };

function parsed(path: string, options = RECIPIENT): Address {
  const result = parsePath(path, options);
  if (!result || "error" in result) throw new Error(`${path} refused: ${JSON.stringify(result)}`);
  return result;
}

function refused(path: string, options = RECIPIENT): string {
  const result = parsePath(path, options);
  if (result && "error" in result) return result.error;
  throw new Error(`${path} accepted as ${JSON.stringify(result)}`);
}

/** Splits a whole MAIL/RCPT argument as the session does and parses its path. */
function fromArgument(argument: string, options = RECIPIENT) {
  const split = splitPathArgument(argument);
  if (!split) return null;
  return { rest: split.rest, address: parsePath(split.path, options) };
}

describe("the RFC's own examples", () => {
  test.each([
    ["Smith@bar.com", "Smith", "bar.com"],
    ["Jones@foo.com", "Jones", "foo.com"],
    ["userc@d.bar.org", "userc", "d.bar.org"],
    ["customer/department=shipping@example.com", "customer/department=shipping", "example.com"],
    ["$A12345@example.com", "$A12345", "example.com"],
    ["!def!xyz%abc@example.com", "!def!xyz%abc", "example.com"],
    ["_somename@example.com", "_somename", "example.com"],
    ["first.last@Example.COM", "first.last", "example.com"],
  ])("%s", (path, local, domain) => {
    const address = parsed(path);
    expect(address).toMatchObject({ local, domain, raw: path });
    expect(address.address).toBe(`${local}@${domain}`);
  });

  test("source routes are accepted and ignored", () => {
    expect(parsed("@hosta.int,@jkl.org:userc@d.bar.org")).toMatchObject({
      local: "userc",
      domain: "d.bar.org",
      raw: "@hosta.int,@jkl.org:userc@d.bar.org",
    });
    expect(parsed("@ONE,@TWO:JOE@THREE").address).toBe("JOE@three");
    expect(parsed("@[IPv6:::1]:user@example.com").address).toBe("user@example.com");
    expect(parsed("@[192.0.2.1]:user@example.com").address).toBe("user@example.com");
  });
});

describe("quoted local parts", () => {
  test.each([
    ['"Fred Bloggs"@example.com', "Fred Bloggs", '"Fred Bloggs"@example.com'],
    ['"Joe\\\\Blow"@example.com', "Joe\\Blow", '"Joe\\\\Blow"@example.com'],
    ['"Abc@def"@example.com', "Abc@def", '"Abc@def"@example.com'],
    ['"a\\"b"@example.com', 'a"b', '"a\\"b"@example.com'],
    ['"x>y"@example.com', "x>y", '"x>y"@example.com'],
    ['"<>"@example.com', "<>", '"<>"@example.com'],
    ['""@example.com', "", '""@example.com'],
    ['"plain"@example.com', "plain", "plain@example.com"],
    ['"\\a"@example.com', "a", "a@example.com"],
  ])("%s", (path, local, address) => {
    expect(parsed(path)).toMatchObject({ local, address });
  });

  test("a `>` inside quotes does not end the path", () => {
    const result = fromArgument('<"a>b"@example.com> SIZE=10', SENDER);
    expect(result?.rest).toBe(" SIZE=10");
    expect(result?.address).toMatchObject({ local: "a>b", domain: "example.com" });
  });

  test("an escaped quote does not end the quoted string", () => {
    const result = fromArgument('<"a\\">"@example.com>');
    expect(result?.address).toMatchObject({ local: 'a">' });
  });

  test.each([
    '"unterminated@example.com',
    '"a"b@example.com',
    'a"b"@example.com',
    '"a\\"@example.com',
    '"tab\there"@example.com',
    '"a"."b"@example.com',
  ])("refuses %s", (path) => {
    refused(path);
  });
});

describe("domains and address literals", () => {
  test.each([
    ["user@[192.0.2.1]", "[192.0.2.1]"],
    ["user@[IPv6:2001:DB8::1]", "[IPv6:2001:db8::1]"],
    ["user@[IPv6:::ffff:192.0.2.1]", "[IPv6:::ffff:192.0.2.1]"],
    ["user@[x-tag:some-data]", "[x-tag:some-data]"],
    ["user@1domain.example", "1domain.example"],
    ["user@a-b.example", "a-b.example"],
  ])("%s", (path, domain) => {
    expect(parsed(path).domain).toBe(domain);
  });

  test.each([
    "user@[256.1.1.1]",
    "user@[192.0.2]",
    "user@[IPv6:fe80::1%eth0]",
    "user@[IPv6:1:2:3:4:5:6:7:8:9]",
    "user@[IPv6:192.0.2.1]",
    "user@[192.0.2.1",
    "user@-lead.example",
    "user@trail-.example",
    "user@under_score.example",
    "user@double..dot",
    "user@trailing.dot.",
    "user@.lead",
    "user@",
    "user",
    "@example.com",
    "user@exa mple.com",
  ])("refuses %s", (path) => {
    refused(path);
  });

  test("a source route with a bad hop is refused", () => {
    refused("@bad_hop:user@example.com");
    refused("@a.example:");
    refused("@a.example,b.example:user@example.com");
  });
});

describe("special paths", () => {
  test("<> is the null sender and no recipient", () => {
    expect(parsePath("", SENDER)).toBeNull();
    refused("", RECIPIENT);
  });

  test("a bare postmaster is a recipient in any case, never a sender", () => {
    expect(parsed("postmaster")).toMatchObject({ local: "postmaster", domain: "" });
    expect(parsed("PostMaster")).toMatchObject({ local: "PostMaster", domain: "", address: "PostMaster" });
    refused("postmaster", SENDER);
    refused("webmaster");
  });
});

describe("length limits", () => {
  test("a local part of 64 octets is accepted, 65 refused", () => {
    expect(parsed(`${"a".repeat(64)}@example.com`).local).toHaveLength(64);
    expect(refused(`${"a".repeat(65)}@example.com`)).toMatch(/local part/);
    // Quotes count: the limit is on the local part as written.
    expect(refused(`"${"a".repeat(63)}"@example.com`)).toMatch(/local part/);
  });

  test("a domain of 255 octets is accepted until the path passes 256", () => {
    const label = "a".repeat(63);
    const domain = [label, label, label, "b".repeat(61)].join(".");
    expect(domain).toHaveLength(253);
    expect(parseDomain(domain, false)).toBe(domain);
    expect(parseDomain(`${domain}.c`, false)).toBe(`${domain}.c`);
    expect(parseDomain(`${domain}.cc`, false)).toBeNull();
    expect(parseDomain(`${"a".repeat(64)}.example`, false)).toBeNull();
  });

  test("a path of 256 octets with its brackets is accepted, 257 refused", () => {
    const domain = (length: number) => ["a".repeat(63), "b".repeat(63), "c".repeat(length - 128)].join(".");
    const fits = `${"u".repeat(64)}@${domain(254 - 65)}`;
    expect(fits.length + 2).toBe(256);
    parsed(fits);
    expect(refused(`${"u".repeat(64)}@${domain(255 - 65)}`)).toMatch(/path too long/);
  });
});

describe("UTF-8 addresses", () => {
  test("are accepted only with SMTPUTF8", () => {
    expect(parsed("用户@例子.广告", UTF8)).toMatchObject({ local: "用户", domain: "例子.广告" });
    expect(parsed('"ü ö"@bücher.example', UTF8).local).toBe("ü ö");
    expect(refused("用户@例子.广告")).toMatch(/SMTPUTF8/);
    expect(refused("user@bücher.example")).toMatch(/SMTPUTF8/);
  });

  test("length limits count octets, not characters", () => {
    expect(refused(`${"ü".repeat(33)}@example.com`, UTF8)).toMatch(/local part/);
    parsed(`${"ü".repeat(32)}@example.com`, UTF8);
  });
});

describe("hostile input", () => {
  test.each([
    "user\u0000@example.com",
    "user@example.com\r",
    "user@exam\nple.com",
    "us\u007fer@example.com",
    "user@@example.com",
    "a@b@example.com",
    "<user@example.com",
    "user@example.com>",
    "user.@example.com",
    ".user@example.com",
    "us..er@example.com",
    "us\\er@example.com",
    "us er@example.com",
    "user@[IPv6:::1]]",
  ])("refuses %j", (path) => {
    refused(path);
  });

  test("text after the closing bracket must be separated by a space", () => {
    expect(splitPathArgument("<a@example.com>SIZE=1")).toBeNull();
    expect(splitPathArgument("<a@example.com")).toBeNull();
    expect(splitPathArgument("a@example.com")).toBeNull();
    expect(splitPathArgument("Postmaster")).toBeNull();
    expect(splitPathArgument(" <a@example.com>")).toEqual({ path: "a@example.com", rest: "" });
  });
});

describe("parameters", () => {
  test("keywords are case-insensitive and values kept", () => {
    expect(parseParameters(" size=100 Body=8BITMIME SMTPUTF8")).toEqual({
      ok: true,
      params: { SIZE: "100", BODY: "8BITMIME", SMTPUTF8: true },
    });
  });

  test("a parameter given twice is a duplicate, in any case", () => {
    expect(parseParameters(" SIZE=1 size=2")).toMatchObject({ ok: false, code: "duplicate" });
  });

  test.each([" =x", " -A=1", " A=b=c", " A=", " A=\u0001"])("refuses %j", (text) => {
    expect(parseParameters(text)).toMatchObject({ ok: false, code: "syntax" });
  });
});

test("formatAddress quotes only where needed", () => {
  expect(formatAddress("a.b", "example.com")).toBe("a.b@example.com");
  expect(formatAddress("a b", "example.com")).toBe('"a b"@example.com');
  expect(formatAddress('a"\\', "example.com")).toBe('"a\\"\\\\"@example.com');
  expect(formatAddress("a..b", "example.com")).toBe('"a..b"@example.com');
  expect(formatAddress("postmaster", "")).toBe("postmaster");
});
