import type { DirectoryEntry, UserDirectory } from "@mailroom/core";
import { expect, test } from "vitest";
import { verifyTarget } from "./verify.js";

const entries: Record<string, DirectoryEntry> = {
  "bob@local.example": { mailbox: "bob", domain: "local.example" },
  "info@local.example": { mailbox: "bob", domain: "local.example" },
  "sales@local.example": { mailbox: "sales", domain: "local.example" },
  "sales@other.example": { mailbox: "sales", domain: "other.example" },
};

const directory: UserDirectory = {
  domains: () => ["local.example", "other.example"],
  lookup: async (local, domain) => entries[`${local}@${domain}`.toLowerCase()] ?? null,
  findLocalPart: (local) =>
    Object.entries(entries)
      .filter(([key]) => key.startsWith(`${local.toLowerCase()}@`))
      .map(([, entry]) => entry),
};

test.each([
  [{ local: "bob", domain: "local.example" }, 250, "2.1.5", "bob@local.example"],
  [{ local: "Bob", domain: "local.example" }, 250, "2.1.5", "bob@local.example"],
  [{ local: "info", domain: "local.example" }, 250, "2.1.5", "bob@local.example"],
  [{ local: "nosuch", domain: "local.example" }, 550, "5.1.1", "Mailbox not found"],
  [{ local: "bob", domain: "remote.example" }, 252, "2.1.5", "Not a local address, cannot verify it"],
  [{ local: "bob", domain: undefined }, 250, "2.1.5", "bob@local.example"],
  [{ local: "nosuch", domain: undefined }, 550, "5.1.1", "Mailbox not found"],
  [{ local: "sales", domain: undefined }, 553, "5.1.4", "User ambiguous, add the domain"],
])("verifyTarget(%j) is %i %s", async (target, code, enhanced, message) => {
  const answer = await verifyTarget(target, directory);
  expect(answer.code).toBe(code);
  expect(answer.enhanced).toBe(enhanced);
  expect(answer.message).toBe(message);
});

test("verifyTarget counts a mailbox found twice once", async () => {
  const twice: UserDirectory = {
    ...directory,
    findLocalPart: () => [entries["bob@local.example"]!, entries["info@local.example"]!],
  };
  const answer = await verifyTarget({ local: "bob", domain: undefined }, twice);
  expect(answer.code).toBe(250);
});

test("verifyTarget uses the directory's own domain spelling", async () => {
  const asked: string[] = [];
  const international: UserDirectory = {
    domains: () => ["bücher.example"],
    lookup: (local, domain) => {
      asked.push(domain);
      return local === "alice" && domain === "bücher.example" ? { mailbox: "alice", domain } : null;
    },
    findLocalPart: () => [],
  };
  const found = await verifyTarget({ local: "alice", domain: "xn--bcher-kva.example" }, international);
  expect(found.code).toBe(250);
  expect(found.message).toBe("alice@xn--bcher-kva.example");
  const missing = await verifyTarget({ local: "nobody", domain: "XN--BCHER-KVA.EXAMPLE" }, international);
  expect(missing.code).toBe(550);
  expect(asked).toEqual(["bücher.example", "bücher.example"]);
});
