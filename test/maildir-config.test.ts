import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { MailroomServer, TOKENS, type UserDirectory } from "@mailroom/core";
import { SmtpTestClient, startTestServer } from "@mailroom/testing";
import { pino } from "pino";
import { stringify } from "yaml";
import { afterEach, expect, test } from "vitest";
import { readWithPython } from "../plugins/maildir/test-support/read-maildir.js";

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function configText(mailboxes: string[], hostname?: string): string {
  return stringify({
    server: { hostname: "mx.example.test", listen: ["127.0.0.1:0"] },
    plugins: [
      {
        use: "@mailroom/plugin-maildir",
        with: { root: "./mail", ...(hostname ? { hostname } : {}), domains: { "example.test": { mailboxes } } },
      },
    ],
  });
}

async function rcptCode(port: number, to: string): Promise<number> {
  const client = await SmtpTestClient.connect(port);
  await client.command("EHLO client.example");
  await client.command("MAIL FROM:<s@sender.example>");
  const reply = await client.command(`RCPT TO:<${to}>`);
  client.close();
  return reply.code;
}

test("reload replaces the plugin's directory", async () => {
  const dir = await tempDir("maildir-reload-");
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, configText(["alice"]));
  const server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  cleanup.push(() => server.close());
  const [address] = await server.listen();

  expect(await rcptCode(address!.port, "alice@example.test")).toBe(250);
  expect(await rcptCode(address!.port, "erin@example.test")).toBe(550);

  await writeFile(file, configText(["alice", "erin"]));
  await server.reload();
  expect(await rcptCode(address!.port, "erin@example.test")).toBe(250);
  const directory = server.container.resolve<UserDirectory>(TOKENS.UserDirectory);
  expect(directory.lookup("erin", "example.test")).toEqual({ mailbox: "erin", domain: "example.test" });
});

test("host name escaped in file names", async () => {
  const dir = await tempDir("maildir-host-");
  const server = await startTestServer(configText(["alice"], "mx/a:b.example"), { dir });
  cleanup.push(() => server.stop());
  const client = await server.connect();
  const replies = await client.send({ from: "s@sender.example", to: ["alice@example.test"], message: "Subject: x\r\n\r\nx\r\n" });
  client.close();
  expect(replies.at(-1)?.code).toBe(250);

  const maildir = path.join(dir, "mail", "example.test", "alice", "Maildir");
  const names = await readdir(path.join(maildir, "new"));
  expect(names).toHaveLength(1);
  expect(names[0]!.endsWith(".mx\\057a\\072b.example")).toBe(true);
  const python = await readWithPython(maildir);
  expect(python.map((message) => message.key)).toEqual(names);
});

test("invalid options stop the server", async () => {
  const dir = await tempDir("maildir-invalid-");
  const text = stringify({
    plugins: [{ use: "@mailroom/plugin-maildir", with: { root: "./mail", domains: { "example.test": { aliases: { info: "nobody" } } } } }],
  });
  const error = await MailroomServer.fromText(text, dir, { logger: pino({ level: "silent" }) }).catch((caught: unknown) => caught);
  expect(String((error as Error).message)).toMatch(/plugin maildir[^]*domains\.example\.test\.aliases\.info[^]*expected one of the domain's mailboxes/);
});
