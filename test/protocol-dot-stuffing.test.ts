/**
 * Dot-unstuffing of DATA (RFC 5321 section 4.5.2): the server deletes the
 * first character of every line that starts with a period and has other
 * characters. Messages go over real sockets and are read back from the
 * Maildir that the maildir plugin wrote.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

const MAILDIR_OPTIONS = {
  root: "./var/mail",
  postmaster: "postmaster@example.test",
  hostname: "mx.example.test",
  domains: { "example.test": { mailboxes: ["alice", "postmaster"] } },
};

let server: TestServer;
let dir: string;
const inbox = () => path.join(dir, "var/mail/example.test/alice/Maildir/new");

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "dot-stuffing-"));
  server = await startTestServer(
    { server: { hostname: "mx.example.test" }, plugins: [{ use: "@mailroom/plugin-maildir", with: MAILDIR_OPTIONS }] },
    { dir },
  );
});
afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Opens a transaction for alice and returns the client after the 354 reply. */
async function openData(): Promise<SmtpTestClient> {
  const client = await server.connect();
  expect((await client.command("EHLO client.example")).code).toBe(250);
  expect((await client.command("MAIL FROM:<s@sender.example>")).code).toBe(250);
  expect((await client.command("RCPT TO:<alice@example.test>")).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  return client;
}

/**
 * Writes each part of the DATA bytes as its own TCP segment, waiting between
 * writes so the server reads them apart, and returns the reply after the
 * final dot.
 */
async function sendParts(parts: string[]): Promise<{ code: number; enhanced: string | undefined }> {
  const client = await openData();
  try {
    for (const [index, part] of parts.entries()) {
      if (index > 0) await sleep(50);
      client.write(Buffer.from(part, "latin1"));
    }
    const reply = await client.read();
    return { code: reply.code, enhanced: reply.enhanced };
  } finally {
    client.close();
  }
}

/** Returns the DATA part of the only message that arrived since `before`, after the trace headers. */
async function newMessage(before: string[]): Promise<string> {
  const added = (await readdir(inbox()).catch(() => [] as string[])).filter((name) => !before.includes(name));
  expect(added).toHaveLength(1);
  const stored = await readFile(path.join(inbox(), added[0]!), "latin1");
  // The maildir plugin adds Return-Path and Delivered-To, the engine a Received header.
  const start = stored.indexOf("\r\nSubject: ");
  expect(start).toBeGreaterThan(0);
  return stored.slice(start + 2);
}

const listInbox = () => readdir(inbox()).catch(() => [] as string[]);

describe("dot-unstuffing of DATA lines", () => {
  const cases: [string, string[], string][] = [
    ["a dot the client did not stuff is removed", ["Subject: a\r\n\r\n.x\r\n.\r\n"], "Subject: a\r\n\r\nx\r\n"],
    ["a stuffed dot is removed once", ["Subject: b\r\n\r\n..x\r\n.\r\n"], "Subject: b\r\n\r\n.x\r\n"],
    ["a stuffed lone dot stays a lone dot", ["Subject: c\r\n\r\n..\r\nafter\r\n.\r\n"], "Subject: c\r\n\r\n.\r\nafter\r\n"],
    ["three dots lose one", ["Subject: d\r\n\r\n...\r\n.\r\n"], "Subject: d\r\n\r\n..\r\n"],
    ["a dot inside a line stays", ["Subject: e\r\n\r\na.b\r\n.\r\n"], "Subject: e\r\n\r\na.b\r\n"],
    ["a line split right after its dot", ["Subject: f\r\n\r\n.", "x\r\n.\r\n"], "Subject: f\r\n\r\nx\r\n"],
    ["a stuffed line split after its first dot", ["Subject: g\r\n\r\n.", ".x\r\n.\r\n"], "Subject: g\r\n\r\n.x\r\n"],
    ["a line split between CR and LF before its dot", ["Subject: h\r\n\r\nbody\r", "\n.x\r\n.\r\n"], "Subject: h\r\n\r\nbody\r\nx\r\n"],
    ["the final dot split from its CRLF", ["Subject: i\r\n\r\n.y\r\n.", "\r\n"], "Subject: i\r\n\r\ny\r\n"],
    ["the final dot split between CR and LF", ["Subject: j\r\n\r\nz\r\n.\r", "\n"], "Subject: j\r\n\r\nz\r\n"],
  ];
  for (const [name, parts, expected] of cases) {
    test(name, async () => {
      const before = await listInbox();
      const reply = await sendParts(parts);
      expect(reply.code).toBe(250);
      expect(await newMessage(before)).toBe(expected);
    });
  }

  test("a first DATA line that starts with a dot loses it", async () => {
    const before = await listInbox();
    const reply = await sendParts([".Subject: k\r\n\r\nbody\r\n.\r\n"]);
    expect(reply.code).toBe(250);
    const added = (await listInbox()).filter((name) => !before.includes(name));
    expect(added).toHaveLength(1);
    const stored = await readFile(path.join(inbox(), added[0]!), "latin1");
    expect(stored.endsWith("\r\nSubject: k\r\n\r\nbody\r\n")).toBe(true);
    expect(stored.includes(".Subject")).toBe(false);
  });

  test("bare LF before a dot line is rejected", async () => {
    const client = await openData();
    client.write("Subject: l\r\n\r\nfirst\n.x\r\n.\r\nNOOP\r\n");
    const reply = await client.read();
    expect(`${reply.code} ${reply.enhanced}`).toBe("554 5.6.0");
    // NOOP was sent after the real end of data, so it runs.
    expect((await client.read()).code).toBe(250);
    client.close();
  });

  test("commands pipelined after the final dot run once", async () => {
    const before = await listInbox();
    const client = await openData();
    client.write("Subject: m\r\n\r\n.x\r\n.\r\nNOOP\r\nQUIT\r\n");
    expect((await client.read()).code).toBe(250);
    expect((await client.read()).code).toBe(250);
    expect((await client.read()).code).toBe(221);
    await client.closed();
    expect(await newMessage(before)).toBe("Subject: m\r\n\r\nx\r\n");
  });

  test("nodemailer's dot-stuffed lines come back as written", async () => {
    const before = await listInbox();
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true });
    try {
      await transport.sendMail({
        envelope: { from: "s@sender.example", to: ["alice@example.test"] },
        raw: "Subject: n\r\n\r\n.x\r\n..y\r\n.\r\nend\r\n",
      });
    } finally {
      transport.close();
    }
    expect(await newMessage(before)).toBe("Subject: n\r\n\r\n.x\r\n..y\r\n.\r\nend\r\n");
  });
});
