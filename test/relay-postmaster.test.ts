import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";
import { PLUGINS, proxyFrom } from "../plugins/relay/test/helpers.js";

let server: TestServer;
let client: SmtpTestClient;

beforeEach(async () => {
  // No localDomains: the relay plugin reads them from the directory that the
  // maildir plugin, listed after it, registers.
  server = await startTestServer({
    server: { hostname: "mx.local.example", proxyProtocol: true },
    plugins: [
      { use: PLUGINS.relay },
      {
        use: "@mailroom/plugin-maildir",
        with: {
          root: "./mail",
          postmaster: "postmaster@local.example",
          domains: { "local.example": { mailboxes: ["bob", "postmaster"] } },
        },
      },
    ],
  });
  client = await server.connect({ proxyHeader: proxyFrom("198.51.100.7") });
  await client.command("EHLO client.example");
});

afterEach(async () => {
  client.close();
  await server.stop();
});

async function postmasterMail(): Promise<string[]> {
  const folder = path.join(server.dir, "mail", "local.example", "postmaster", "Maildir", "new");
  const files = await readdir(folder);
  const texts = await Promise.all(files.map((file) => readFile(path.join(folder, file), "utf8")));
  // Maildir names do not sort by arrival (the microseconds are not padded),
  // so the messages are put in order by their subject.
  return texts.sort((a, b) => subject(a).localeCompare(subject(b)));
}

function subject(text: string): string {
  return /^Subject: (.*)$/m.exec(text)?.[1] ?? "";
}

test("bare postmaster reaches the postmaster mailbox", async () => {
  for (const [index, recipient] of ["<postmaster>", "<Postmaster>", "<POSTMASTER>"].entries()) {
    expect((await client.command("MAIL FROM:<someone@sender.example>")).code).toBe(250);
    const reply = await client.command(`RCPT TO:${recipient}`);
    expect(reply.code).toBe(250);
    const final = await client.data(`Subject: note ${index}\r\n\r\nhello\r\n`);
    expect(final.code).toBe(250);
  }
  const stored = await postmasterMail();
  expect(stored).toHaveLength(3);
  expect(stored[0]).toMatch(/^Return-Path: <someone@sender.example>\r\nDelivered-To: postmaster@local.example\r\n/);
  expect(stored[0]).toContain("Subject: note 0");
  expect(stored[1]).toContain("Subject: note 1");
  expect(stored[2]).toContain("Subject: note 2");
});

test("postmaster at a local domain ignores case", async () => {
  await client.command("MAIL FROM:<someone@sender.example>");
  expect((await client.command("RCPT TO:<PostMaster@Local.Example>")).code).toBe(250);
  expect((await client.data("Subject: cased\r\n\r\nhello\r\n")).code).toBe(250);
  const stored = await postmasterMail();
  expect(stored).toHaveLength(1);
});

test("postmaster without brackets is a syntax error", async () => {
  await client.command("MAIL FROM:<someone@sender.example>");
  const reply = await client.command("RCPT TO:Postmaster");
  expect(reply.code).toBe(501);
  expect(reply.enhanced).toBe("5.5.4");
  const bare = await client.command("RCPT TO:postmaster");
  expect(bare.code).toBe(501);
  expect(bare.enhanced).toBe("5.5.4");
});

test("postmaster of a remote domain is not exempt", async () => {
  await client.command("MAIL FROM:<someone@sender.example>");
  const reply = await client.command("RCPT TO:<postmaster@evil.example>");
  expect(reply.code).toBe(550);
  expect(reply.enhanced).toBe("5.7.1");
});
