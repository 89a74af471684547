import { describe, expect, test } from "vitest";
import { optionsSchema } from "./options.js";

const issues = (input: unknown) => {
  const result = optionsSchema.safeParse(input);
  return result.success ? [] : result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
};

describe("maildir options", () => {
  test("fills in the defaults", () => {
    const options = optionsSchema.parse({ root: "./var/mail", domains: { "example.test": {} } });
    expect(options.domains["example.test"]).toEqual({ mailboxes: [], aliases: {}, recipientDelimiter: "+" });
    expect(options.postmaster).toBeUndefined();
  });

  test("accepts the documented example", () => {
    expect(
      issues({
        root: "./var/mail",
        postmaster: "postmaster@example.test",
        domains: {
          "example.test": { mailboxes: ["alice", "bob", "postmaster"], aliases: { info: "alice" }, catchAll: "bob" },
        },
      }),
    ).toEqual([]);
  });

  test("requires root", () => {
    expect(issues({ domains: {} })[0]).toMatch(/^root:/);
  });

  test("refuses unknown keys", () => {
    expect(issues({ root: "r", domain: {} }).join()).toMatch(/domain/);
    expect(issues({ root: "r", domains: { "a.test": { mailbox: [] } } }).join()).toMatch(/mailbox/);
  });

  test("refuses mailbox names that are not a single folder", () => {
    for (const name of ["../etc", "a/b", ".", "..", "", "a\u0000b", "a@b"]) {
      expect(issues({ root: "r", domains: { "a.test": { mailboxes: [name] } } }).length, name).toBeGreaterThan(0);
    }
  });

  test("refuses domain names that are not host names", () => {
    expect(issues({ root: "r", domains: { "bad domain": {} } })[0]).toMatch(/^domains\.bad domain: invalid domain "bad domain": expected a domain/);
    expect(issues({ root: "r", domains: { "[192.0.2.1]": {} } }).length).toBe(1);
  });

  test("refuses an international domain name that fails IDNA", () => {
    expect(issues({ root: "r", domains: { "xn--zz.example": {} } })).toEqual([
      'domains.xn--zz.example: invalid international domain name "xn--zz.example": a label fails the IDNA rules (RFC 5891) or is longer than 63 octets as an A-label',
    ]);
  });

  test("refuses an international domain listed in both forms", () => {
    expect(issues({ root: "r", domains: { "bücher.example": {}, "xn--bcher-kva.example": {} } })).toEqual([
      'domains.xn--bcher-kva.example: domain xn--bcher-kva.example is listed twice, as "bücher.example" and "xn--bcher-kva.example"',
    ]);
  });

  test("accepts a postmaster in the other form of its domain", () => {
    const domains = { "bücher.example": { mailboxes: ["postmaster"] } };
    expect(issues({ root: "r", postmaster: "postmaster@xn--bcher-kva.example", domains })).toEqual([]);
    expect(issues({ root: "r", postmaster: "postmaster@BÜCHER.example", domains })).toEqual([]);
  });

  test("refuses a domain listed twice in different case", () => {
    expect(issues({ root: "r", domains: { "A.test": {}, "a.test.": {} } }).join()).toMatch(/listed twice/);
  });

  test("requires alias targets and catchAll to be mailboxes of the domain", () => {
    const found = issues({
      root: "r",
      domains: { "a.test": { mailboxes: ["alice"], aliases: { info: "nobody" }, catchAll: "ghost" } },
    });
    expect(found).toEqual([
      'domains.a.test.aliases.info: expected one of the domain\'s mailboxes, got "nobody"',
      'domains.a.test.catchAll: expected one of the domain\'s mailboxes, got "ghost"',
    ]);
  });

  test("requires the postmaster address to be a local mailbox", () => {
    const domains = { "a.test": { mailboxes: ["alice"] } };
    expect(issues({ root: "r", postmaster: "not an address", domains })[0]).toMatch(/^postmaster: expected an address/);
    expect(issues({ root: "r", postmaster: "alice@b.test", domains })[0]).toMatch(/local domains \(a\.test\)/);
    expect(issues({ root: "r", postmaster: "ghost@a.test", domains })[0]).toMatch(/mailbox or alias of a\.test/);
    expect(issues({ root: "r", postmaster: "Alice@A.test", domains })).toEqual([]);
  });

  test("refuses letters or digits as the recipient delimiter and allows none", () => {
    expect(issues({ root: "r", domains: { "a.test": { recipientDelimiter: "x" } } }).length).toBe(1);
    expect(issues({ root: "r", domains: { "a.test": { recipientDelimiter: "" } } })).toEqual([]);
    expect(issues({ root: "r", domains: { "a.test": { recipientDelimiter: "+-" } } })).toEqual([]);
  });
});
