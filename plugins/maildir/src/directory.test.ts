import { describe, expect, test } from "vitest";
import { ConfigDirectory } from "./directory.js";

const directory = new ConfigDirectory({
  postmaster: "hostmaster@example.test",
  domains: {
    "Example.Test": {
      mailboxes: ["Alice", "bob", "hostmaster"],
      aliases: { info: "alice", "Sales-Team": "bob" },
    },
    "other.test.": {
      mailboxes: ["alice", "carol"],
      catchAll: "carol",
      recipientDelimiter: "-",
    },
    "plain.test": { mailboxes: ["dave"], recipientDelimiter: "" },
  },
});

describe("ConfigDirectory", () => {
  test("lists the domains lower-cased without a trailing dot", () => {
    expect(directory.domains()).toEqual(["example.test", "other.test", "plain.test"]);
  });

  test("finds mailboxes case-insensitively and returns lower-case names", () => {
    expect(directory.lookup("ALICE", "example.TEST")).toEqual({ mailbox: "alice", domain: "example.test" });
    expect(directory.lookup("alice", "example.test.")).toEqual({ mailbox: "alice", domain: "example.test" });
  });

  test("resolves aliases to their mailbox", () => {
    expect(directory.lookup("Info", "example.test")).toEqual({ mailbox: "alice", domain: "example.test" });
    expect(directory.lookup("sales-team", "example.test")).toEqual({ mailbox: "bob", domain: "example.test" });
  });

  test("drops the extension after the recipient delimiter", () => {
    expect(directory.lookup("alice+news", "example.test")).toEqual({ mailbox: "alice", domain: "example.test" });
    expect(directory.lookup("info+a+b", "example.test")).toEqual({ mailbox: "alice", domain: "example.test" });
    expect(directory.lookup("+alice", "example.test")).toBeNull();
    expect(directory.lookup("alice-news", "other.test")).toEqual({ mailbox: "alice", domain: "other.test" });
  });

  test("does not split at a delimiter when the delimiter is empty", () => {
    expect(directory.lookup("dave+x", "plain.test")).toBeNull();
    expect(directory.lookup("dave", "plain.test")).toEqual({ mailbox: "dave", domain: "plain.test" });
  });

  test("a whole local part that is a mailbox wins over splitting it", () => {
    expect(directory.lookup("sales-team", "example.test")?.mailbox).toBe("bob");
  });

  test("sends unknown local parts to the catch-all only where one is set", () => {
    expect(directory.lookup("whoever", "other.test")).toEqual({ mailbox: "carol", domain: "other.test" });
    expect(directory.lookup("whoever", "example.test")).toBeNull();
  });

  test("routes every postmaster to the postmaster mailbox", () => {
    const postmaster = { mailbox: "hostmaster", domain: "example.test" };
    expect(directory.lookup("postmaster", "example.test")).toEqual(postmaster);
    expect(directory.lookup("PostMaster", "other.test")).toEqual(postmaster);
    expect(directory.lookup("postmaster", "")).toEqual(postmaster);
    expect(directory.lookup("postmaster+x", "example.test")).toEqual(postmaster);
  });

  test("knows nothing about other domains or other empty-domain names", () => {
    expect(directory.lookup("alice", "elsewhere.test")).toBeNull();
    expect(directory.lookup("postmaster", "elsewhere.test")).toBeNull();
    expect(directory.lookup("alice", "")).toBeNull();
  });

  test("finds a local part in every domain, without catch-alls", () => {
    expect(directory.findLocalPart("ALICE")).toEqual([
      { mailbox: "alice", domain: "example.test" },
      { mailbox: "alice", domain: "other.test" },
    ]);
    expect(directory.findLocalPart("whoever")).toEqual([]);
  });

  test("matches an international domain as U-labels or A-labels", () => {
    const idn = new ConfigDirectory({
      postmaster: "postmaster@xn--mnchen-3ya.example",
      domains: { "Bücher.Example": { mailboxes: ["alice"] }, "xn--mnchen-3ya.example": { mailboxes: ["postmaster"] } },
    });
    expect(idn.domains()).toEqual(["xn--bcher-kva.example", "xn--mnchen-3ya.example"]);
    const alice = { mailbox: "alice", domain: "xn--bcher-kva.example" };
    expect(idn.lookup("alice", "bücher.example")).toEqual(alice);
    expect(idn.lookup("alice", "XN--BCHER-KVA.example.")).toEqual(alice);
    const postmaster = { mailbox: "postmaster", domain: "xn--mnchen-3ya.example" };
    expect(idn.lookup("postmaster", "bücher.example")).toEqual(postmaster);
    expect(idn.lookup("postmaster", "münchen.example")).toEqual(postmaster);
    expect(idn.lookup("alice", "xn--zz.example")).toBeNull();
  });

  test("without a postmaster address, postmaster is an ordinary local part", () => {
    const plain = new ConfigDirectory({ domains: { "a.test": { mailboxes: ["postmaster"] }, "b.test": {} } });
    expect(plain.lookup("postmaster", "a.test")).toEqual({ mailbox: "postmaster", domain: "a.test" });
    expect(plain.lookup("postmaster", "b.test")).toBeNull();
    expect(plain.lookup("postmaster", "")).toBeNull();
  });
});
