import { readdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import nodemailer from "nodemailer";
import { startTestServer, type TestServer } from "@mailroom/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { readWithPython } from "../plugins/maildir/test-support/read-maildir.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const REJECT_BY_HEADER = path.join(ROOT, "examples/basic-server/plugins/reject-by-header.ts");

let server: TestServer;

// The example plugin reject-by-header in front of maildir, with a rule on the
// Subject that a sender can only hide behind RFC 2047 encoding.
beforeAll(async () => {
  server = await startTestServer({
    server: { hostname: "mx.example.test" },
    plugins: [
      { use: "@mailroom/plugin-relay" },
      { use: REJECT_BY_HEADER, with: { rules: [{ header: "Subject", matches: "\\bviagra\\b" }] } },
      { use: "@mailroom/plugin-maildir", with: { root: "./mail", domains: { "example.test": { mailboxes: ["alice"] } } } },
    ],
  });
});

afterAll(async () => {
  await server?.stop();
});

const maildir = () => path.join(server.dir, "mail", "example.test", "alice", "Maildir");
const stored = async () => (await readdir(path.join(maildir(), "new")).catch(() => [] as string[])).length;

test("B-encoded folded subject is rejected", async () => {
  const before = await stored();
  const client = await server.connect();
  const replies = await client.send({
    from: "sender@remote.example",
    to: ["alice@example.test"],
    // "Günstig Viagra" and " kaufen", as two encoded-words on two lines.
    message: "Subject: =?UTF-8?B?R8O8bnN0aWcgVmlhZ3Jh?=\r\n =?UTF-8?Q?_kaufen?=\r\n\r\nbody\r\n",
  });
  client.close();
  expect(replies.at(-1)?.raw).toBe("550 5.7.1 Message rejected by content policy");
  expect(await stored()).toBe(before);
});

test("subject that nodemailer encodes is rejected", async () => {
  const before = await stored();
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true });
  const sending = transport.sendMail({
    from: "sender@remote.example",
    to: "alice@example.test",
    subject: "Grüße: billiges Viagra",
    text: "body",
  });
  await expect(sending).rejects.toMatchObject({ responseCode: 550 });
  transport.close();
  expect(await stored()).toBe(before);
});

test("clean encoded subject is stored unchanged", async () => {
  const before = await stored();
  const subject = "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=";
  const client = await server.connect();
  const replies = await client.send({
    from: "sender@remote.example",
    to: ["alice@example.test"],
    message: `Subject: ${subject}\r\n\r\nbody\r\n`,
  });
  client.close();
  expect(replies.at(-1)?.code).toBe(250);
  expect(await stored()).toBe(before + 1);
  const messages = await readWithPython(maildir());
  const text = messages.at(-1)!.bytes.toString("latin1");
  expect(text).toContain(`\r\nSubject: ${subject}\r\n`);
});
