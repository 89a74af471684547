import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { MailroomServer } from "@mailroom/core";
import { SmtpTestClient } from "@mailroom/testing";
import { pino } from "pino";
import { afterEach, beforeEach, expect, test } from "vitest";
import { stringify } from "yaml";
import { PLUGINS, proxyFrom } from "../plugins/relay/test/helpers.js";

let dir: string;
let file: string;
let server: MailroomServer;
let port: number;
const clients: SmtpTestClient[] = [];

function writeConfig(trustedNetworks: string[]): Promise<void> {
  const config = {
    server: { hostname: "mx.local.example", proxyProtocol: true },
    plugins: [
      { use: PLUGINS.relay, with: { localDomains: ["local.example"], trustedNetworks } },
      {
        use: PLUGINS.mailboxes,
        with: { mailboxes: ["bob@local.example"], postmaster: "bob@local.example" },
      },
    ],
  };
  return writeFile(file, stringify(config));
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-relay-reload-"));
  file = path.join(dir, "mailroom.yaml");
  await writeConfig(["192.0.2.0/24"]);
  server = await MailroomServer.fromFile(file, {
    logger: pino({ level: "silent" }),
    listen: ["127.0.0.1:0"],
  });
  port = (await server.listen())[0]!.port;
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

async function openFrom(address: string): Promise<SmtpTestClient> {
  const client = await SmtpTestClient.connect(port, "127.0.0.1", { proxyHeader: proxyFrom(address) });
  clients.push(client);
  expect((await client.command("EHLO client.example")).code).toBe(250);
  return client;
}

async function relayReply(client: SmtpTestClient): Promise<number> {
  await client.command("MAIL FROM:<a@sender.example>");
  const reply = await client.command("RCPT TO:<victim@evil.example>");
  await client.command("RSET");
  return reply.code;
}

test("reload picks up a new trusted network", async () => {
  const before = await openFrom("198.51.100.7");
  expect(await relayReply(before)).toBe(550);

  await writeConfig(["192.0.2.0/24", "198.51.100.0/24"]);
  await server.reload();

  const after = await openFrom("198.51.100.7");
  expect(await relayReply(after)).toBe(250);

  // The connection opened before the reload stays open on the rules it started with.
  expect((await before.command("NOOP")).code).toBe(250);
  expect(await relayReply(before)).toBe(550);
  expect(before.isClosed).toBe(false);
});

test("reload drops a removed trusted network", async () => {
  expect(await relayReply(await openFrom("192.0.2.10"))).toBe(250);
  await writeConfig([]);
  await server.reload();
  expect(await relayReply(await openFrom("192.0.2.10"))).toBe(550);
});

test("invalid network on reload keeps the running rules", async () => {
  await writeConfig(["198.51.100.7/8"]);
  await expect(server.reload()).rejects.toThrow(/trustedNetworks\[0\]: invalid network "198\.51\.100\.7\/8"/);
  expect(await relayReply(await openFrom("192.0.2.10"))).toBe(250);
  expect(await relayReply(await openFrom("198.51.100.7"))).toBe(550);
});
