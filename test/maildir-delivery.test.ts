import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { container as rootContainer, TOKENS, type UserDirectory } from "@mailroom/core";
import { startTestServer, type TestServer } from "@mailroom/testing";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { readWithPython } from "../plugins/maildir/test-support/read-maildir.js";

const MAILDIR_OPTIONS = {
  root: "./var/mail",
  postmaster: "postmaster@example.test",
  hostname: "mx.example.test",
  domains: {
    "example.test": { mailboxes: ["alice", "bob", "postmaster"], aliases: { info: "alice" } },
    "catch.test": { mailboxes: ["carol"], catchAll: "carol", recipientDelimiter: "" },
  },
};

let server: TestServer;
let dir: string;
const maildirOf = (domain: string, mailbox: string) => path.join(dir, "var/mail", domain, mailbox, "Maildir");
const newFiles = (domain: string, mailbox: string) => readdir(path.join(maildirOf(domain, mailbox), "new")).catch(() => [] as string[]);

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "maildir-e2e-"));
  server = await startTestServer(
    { server: { hostname: "mx.example.test" }, plugins: [{ use: "@mailroom/plugin-maildir", with: MAILDIR_OPTIONS }] },
    { dir },
  );
});
afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Sends one message over a raw connection and returns the reply codes with enhanced codes. */
async function send(from: string, to: string[], message: string) {
  const client = await server.connect();
  try {
    const replies = await client.send({ from, to, message });
    return replies.map((reply) => `${reply.code} ${reply.enhanced ?? ""}`.trim());
  } finally {
    client.close();
  }
}

describe("local delivery into maildirs", () => {
  test("mailbox gets the message with trace headers", async () => {
    const before = await newFiles("example.test", "alice");
    const body = "From: s@sender.example\r\nSubject: hello\r\n\r\nfirst line\r\n.starts with a dot\r\n";
    const replies = await send("s@sender.example", ["alice@example.test"], body);
    expect(replies).toEqual(["250", "250 2.1.0", "250 2.1.5", "250 2.0.0"]);

    const added = (await newFiles("example.test", "alice")).filter((name) => !before.includes(name));
    expect(added).toHaveLength(1);
    expect(added[0]!.endsWith(".mx.example.test")).toBe(true);
    const stored = await readFile(path.join(maildirOf("example.test", "alice"), "new", added[0]!), "latin1");
    expect(stored).toMatch(
      /^Return-Path: <s@sender\.example>\r\nDelivered-To: alice@example\.test\r\nReceived: from client\.example [^]*?\r\n(?!\t)/,
    );
    // The client dot-stuffs the data; the stored copy has it exactly as written.
    expect(stored.endsWith(`\r\n${body}`)).toBe(true);

    const python = (await readWithPython(maildirOf("example.test", "alice"))).find((message) => message.key === added[0]);
    expect(python?.bytes.toString("latin1")).toBe(stored);
    expect(python?.returnPath).toBe("<s@sender.example>");
    expect(python?.deliveredTo).toBe("alice@example.test");
  });

  test("alias, extension and case reach the mailbox", async () => {
    const before = await newFiles("example.test", "alice");
    expect(await send("s@sender.example", ["info@example.test"], "Subject: alias\r\n\r\nx\r\n")).toContain("250 2.0.0");
    expect(await send("s@sender.example", ["Alice+News@EXAMPLE.test"], "Subject: plus\r\n\r\nx\r\n")).toContain("250 2.0.0");
    const added = (await newFiles("example.test", "alice")).filter((name) => !before.includes(name));
    expect(added).toHaveLength(2);
    const python = await readWithPython(maildirOf("example.test", "alice"));
    const subjects = python.filter((message) => added.includes(message.key)).map((message) => message.bytes.toString());
    expect(subjects.some((text) => text.includes("Subject: alias") && text.includes("Delivered-To: alice@example.test"))).toBe(true);
    expect(subjects.some((text) => text.includes("Subject: plus"))).toBe(true);
  });

  test("one copy per mailbox per transaction", async () => {
    const alice = await newFiles("example.test", "alice");
    const bob = await newFiles("example.test", "bob");
    const replies = await send("s@sender.example", ["alice@example.test", "info@example.test", "bob@example.test"], "Subject: both\r\n\r\nx\r\n");
    expect(replies.at(-1)).toBe("250 2.0.0");
    expect((await newFiles("example.test", "alice")).length - alice.length).toBe(1);
    expect((await newFiles("example.test", "bob")).length - bob.length).toBe(1);
  });

  test("unknown local user rejected at RCPT", async () => {
    const client = await server.connect();
    await client.command("EHLO client.example");
    await client.command("MAIL FROM:<s@sender.example>");
    const reply = await client.command("RCPT TO:<nosuch@example.test>");
    expect([reply.code, reply.enhanced]).toEqual([550, "5.1.1"]);
    expect((await client.command("RCPT TO:<bob@example.test>")).code).toBe(250);
    client.close();
    expect(existsSync(maildirOf("example.test", "nosuch"))).toBe(false);
  });

  test("foreign domain left to other plugins", async () => {
    const client = await server.connect();
    await client.command("EHLO client.example");
    await client.command("MAIL FROM:<s@sender.example>");
    const reply = await client.command("RCPT TO:<alice@elsewhere.example>");
    expect([reply.code, reply.enhanced]).toEqual([550, "5.7.1"]);
    client.close();
  });

  test("postmaster addresses reach the postmaster mailbox", async () => {
    const before = await newFiles("example.test", "postmaster");
    expect(await send("s@sender.example", ["postmaster"], "Subject: bare\r\n\r\nx\r\n")).toContain("250 2.0.0");
    expect(await send("s@sender.example", ["PostMaster@catch.test"], "Subject: other\r\n\r\nx\r\n")).toContain("250 2.0.0");
    expect((await newFiles("example.test", "postmaster")).length - before.length).toBe(2);
    expect(await newFiles("catch.test", "carol")).toEqual([]);
  });

  test("catch-all takes unknown local parts", async () => {
    expect(await send("s@sender.example", ["anything.at.all@catch.test"], "Subject: catch\r\n\r\nx\r\n")).toContain("250 2.0.0");
    const python = await readWithPython(maildirOf("catch.test", "carol"));
    expect(python).toHaveLength(1);
    expect(python[0]!.deliveredTo).toBe("carol@catch.test");
  });

  test("message is in new/ when 250 arrives", async () => {
    const client = await server.connect();
    await client.command("EHLO client.example");
    await client.command("MAIL FROM:<s@sender.example>");
    await client.command("RCPT TO:<bob@example.test>");
    const before = readdirSync(path.join(maildirOf("example.test", "bob"), "new"));
    const reply = await client.data("Subject: timing\r\n\r\nx\r\n");
    // Read synchronously on the reply, before anything else can run.
    const after = readdirSync(path.join(maildirOf("example.test", "bob"), "new"));
    expect(reply.code).toBe(250);
    expect(after.length).toBe(before.length + 1);
    expect(readdirSync(path.join(maildirOf("example.test", "bob"), "tmp"))).toEqual([]);
    client.close();
  });

  test("nodemailer delivers to alice", async () => {
    const before = await newFiles("example.test", "alice");
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true });
    const info = await transport.sendMail({
      from: "sender@sender.example",
      to: "alice@example.test",
      subject: "through nodemailer",
      text: "Hello from nodemailer\n",
    });
    transport.close();
    expect(info.accepted).toEqual(["alice@example.test"]);
    expect(info.response).toMatch(/^250 2\.0\.0/);
    const added = (await newFiles("example.test", "alice")).filter((name) => !before.includes(name));
    expect(added).toHaveLength(1);
    const python = (await readWithPython(maildirOf("example.test", "alice"))).find((message) => message.key === added[0]);
    expect(python?.returnPath).toBe("<sender@sender.example>");
    expect(python?.bytes.toString()).toContain("Subject: through nodemailer");
  });
});

describe("null reverse-path", () => {
  const report = [
    "From: MAILER-DAEMON@remote.example",
    "To: alice@example.test",
    "Subject: Delivery Status Notification",
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
    "",
    "--b",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    "Zustellung fehlgeschlagen: Empfänger unbekannt.",
    "--b",
    "Content-Type: message/delivery-status",
    "",
    "Reporting-MTA: dns; remote.example",
    "",
    "Final-Recipient: rfc822; someone@remote.example",
    "Action: failed",
    "Status: 5.1.1",
    "--b--",
    "",
  ].join("\r\n");

  test("bounce from <> stored with Return-Path: <>", async () => {
    const before = await newFiles("example.test", "alice");
    const client = await server.connect();
    await client.command("EHLO remote.example");
    const mail = await client.command("MAIL FROM:<> SIZE=900 BODY=8BITMIME");
    expect([mail.code, mail.enhanced]).toEqual([250, "2.1.0"]);
    expect((await client.command("RCPT TO:<alice@example.test>")).code).toBe(250);
    const reply = await client.data(Buffer.from(report, "utf8"));
    expect([reply.code, reply.enhanced]).toEqual([250, "2.0.0"]);
    client.close();

    const added = (await newFiles("example.test", "alice")).filter((name) => !before.includes(name));
    expect(added).toHaveLength(1);
    const stored = await readFile(path.join(maildirOf("example.test", "alice"), "new", added[0]!));
    expect(stored.toString("latin1")).toMatch(/^Return-Path: <>\r\nDelivered-To: alice@example\.test\r\nReceived: /);
    expect(stored.subarray(stored.length - Buffer.byteLength(report)).equals(Buffer.from(report, "utf8"))).toBe(true);
    const python = (await readWithPython(maildirOf("example.test", "alice"))).find((message) => message.key === added[0]);
    expect(python?.returnPath).toBe("<>");
  });

  test("RCPT TO:<> rejected with 501 5.1.3", async () => {
    const client = await server.connect();
    await client.command("EHLO remote.example");
    await client.command("MAIL FROM:<>");
    const reply = await client.command("RCPT TO:<>");
    expect([reply.code, reply.enhanced]).toEqual([501, "5.1.3"]);
    client.close();
  });
});

describe("a directory provided by the organisation", () => {
  test("replaces the configured mailboxes", async () => {
    const lookups: string[] = [];
    const directory: UserDirectory = {
      domains: () => ["corp.test"],
      lookup: async (local, domain) => {
        lookups.push(`${local}@${domain}`);
        return local.toLowerCase() === "dana" ? { mailbox: "dana", domain: "corp.test" } : null;
      },
      findLocalPart: () => [],
    };
    const parent = rootContainer.createChildContainer();
    parent.register(TOKENS.UserDirectory, { useValue: directory });
    const corp = await startTestServer(
      { plugins: [{ use: "@mailroom/plugin-maildir", with: { ...MAILDIR_OPTIONS, root: "./mail" } }] },
      { container: parent },
    );
    try {
      const client = await corp.connect();
      await client.command("EHLO client.example");
      await client.command("MAIL FROM:<s@sender.example>");
      expect((await client.command("RCPT TO:<alice@example.test>")).code).toBe(550);
      expect((await client.command("RCPT TO:<ghost@corp.test>")).enhanced).toBe("5.1.1");
      expect((await client.command("RCPT TO:<Dana@corp.test>")).code).toBe(250);
      expect((await client.data("Subject: corp\r\n\r\nx\r\n")).code).toBe(250);
      client.close();
      const python = await readWithPython(path.join(corp.dir, "mail", "corp.test", "dana", "Maildir"));
      expect(python.map((message) => message.deliveredTo)).toEqual(["dana@corp.test"]);
      expect(lookups).toEqual(["ghost@corp.test", "Dana@corp.test"]);
      expect(corp.server.container.resolve(TOKENS.UserDirectory)).toBe(directory);
    } finally {
      await corp.stop();
    }
  });

  test("plugin registers its own when none exists", () => {
    const registered = server.server.container.resolve<UserDirectory>(TOKENS.UserDirectory);
    expect(registered.lookup("info", "example.test")).toEqual({ mailbox: "alice", domain: "example.test" });
  });
});
