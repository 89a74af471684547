import { describe, expect, test } from "vitest";
import { DomainSet } from "./domains.js";
import { decideRecipient, mayRelay, type ClientFacts } from "./policy.js";

describe("DomainSet", () => {
  test("ignores case and a trailing dot", () => {
    const set = new DomainSet(["Local.Example."]);
    expect(set.has("local.example")).toBe(true);
    expect(set.has("LOCAL.EXAMPLE")).toBe(true);
    expect(set.has("local.example.")).toBe(true);
    expect(set.has("sub.local.example")).toBe(false);
    expect(set.has("example")).toBe(false);
  });

  test("matches an international domain in either form", () => {
    const set = new DomainSet(["bücher.example", "xn--mnchen-3ya.example"]);
    expect(set.has("xn--bcher-kva.example")).toBe(true);
    expect(set.has("Bücher.Example")).toBe(true);
    expect(set.has("münchen.example")).toBe(true);
    expect(set.has("XN--MNCHEN-3YA.EXAMPLE")).toBe(true);
    expect(set.has("bucher.example")).toBe(false);
    expect(set.values()).toEqual(["xn--bcher-kva.example", "xn--mnchen-3ya.example"]);
  });

  test("compares address literals in canonical form", () => {
    const set = new DomainSet(["[IPv6:2001:db8::1]", "[192.0.2.1]"]);
    expect(set.has("[IPv6:2001:DB8:0:0::1]")).toBe(true);
    expect(set.has("[192.0.2.1]")).toBe(true);
    expect(set.has("[192.0.2.2]")).toBe(false);
  });
});

const local = new DomainSet(["local.example"]);
const relay = new DomainSet(["backup.example"]);
const domains = { local, relay };

const stranger: ClientFacts = { trustedNetwork: false, authenticated: false, allowAuthenticated: true };
const office: ClientFacts = { trustedNetwork: true, authenticated: false, allowAuthenticated: true };
const user: ClientFacts = { trustedNetwork: false, authenticated: true, allowAuthenticated: true };
const userWithoutRelay: ClientFacts = { ...user, allowAuthenticated: false };

describe("mayRelay", () => {
  test.each([
    ["stranger", stranger, false],
    ["trusted network", office, true],
    ["authenticated", user, true],
    ["authenticated, allowAuthenticated off", userWithoutRelay, false],
    ["trusted and authenticated, allowAuthenticated off", { ...office, authenticated: true, allowAuthenticated: false }, true],
    ["message injected by the server", { ...stranger, injected: true }, true],
  ])("%s", (_name, facts, expected) => {
    expect(mayRelay(facts)).toBe(expected);
  });
});

describe("decideRecipient", () => {
  test.each([
    // domain, client, decision
    ["local.example", stranger, "local"],
    ["LOCAL.example.", stranger, "local"],
    ["local.example", office, "local"],
    ["local.example", user, "local"],
    ["", stranger, "local"],
    ["backup.example", stranger, "relay-domain"],
    ["backup.example", office, "relay-domain"],
    ["evil.example", stranger, "denied"],
    ["evil.example", userWithoutRelay, "denied"],
    ["evil.example", office, "relay-client"],
    ["evil.example", user, "relay-client"],
    ["sub.local.example", stranger, "denied"],
    ["[192.0.2.1]", stranger, "denied"],
    ["[192.0.2.1]", office, "relay-client"],
  ] as const)("%j from %o is %s", (domain, client, expected) => {
    expect(decideRecipient(domain, domains, client)).toBe(expected);
  });

  test("treats a configured address literal as local", () => {
    const withLiteral = { local: new DomainSet(["[192.0.2.1]"]), relay };
    expect(decideRecipient("[192.0.2.1]", withLiteral, stranger)).toBe("local");
  });
});
