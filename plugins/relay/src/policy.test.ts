import { describe, expect, test } from "vitest";
import { DomainSet, normalizeDomain } from "./domains.js";
import { decideRecipient, mayRelay, type ClientFacts } from "./policy.js";

describe("normalizeDomain", () => {
  test.each([
    ["Local.Example", "local.example"],
    ["local.example.", "local.example"],
    ["LOCAL.EXAMPLE.", "local.example"],
    [" local.example ", "local.example"],
    ["Bücher.Example", "xn--bcher-kva.example"],
    ["xn--bcher-kva.example", "xn--bcher-kva.example"],
    ["[192.0.2.1]", "[192.0.2.1]"],
    ["[IPv6:2001:DB8:0::1]", "[ipv6:2001:db8::1]"],
    ["[ipv6:2001:db8::1]", "[ipv6:2001:db8::1]"],
  ])("normalizes %j", (input, expected) => {
    expect(normalizeDomain(input)).toBe(expected);
  });

  test.each(["", "local..example", "a b.example", "user@local.example", "[999.0.0.1]", "."])(
    "rejects %j",
    (input) => {
      expect(normalizeDomain(input)).toBeNull();
    },
  );
});

describe("DomainSet", () => {
  test("ignores case and a trailing dot", () => {
    const set = new DomainSet(["Local.Example."]);
    expect(set.has("local.example")).toBe(true);
    expect(set.has("LOCAL.EXAMPLE")).toBe(true);
    expect(set.has("local.example.")).toBe(true);
    expect(set.has("sub.local.example")).toBe(false);
    expect(set.has("example")).toBe(false);
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
