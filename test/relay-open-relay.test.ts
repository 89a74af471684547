import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { PLUGINS, proxyFrom, recordingLogger, startSink, type Sink } from "../plugins/relay/test/helpers.js";

const UNTRUSTED = "198.51.100.7";
const OFFICE = "192.0.2.10";

let sink: Sink;
let server: TestServer;
let log: ReturnType<typeof recordingLogger>;
const clients: SmtpTestClient[] = [];

beforeEach(async () => {
  sink = await startSink();
  log = recordingLogger();
  server = await startTestServer(
    {
      server: { hostname: "mx.local.example", proxyProtocol: true },
      plugins: [
        {
          use: PLUGINS.relay,
          with: { localDomains: ["local.example"], trustedNetworks: ["192.0.2.0/24"] },
        },
        {
          use: "@mailroom/plugin-maildir",
          with: {
            root: "./mail",
            postmaster: "postmaster@local.example",
            domains: { "local.example": { mailboxes: ["bob", "postmaster"] } },
          },
        },
        { use: PLUGINS.forward, with: { port: sink.port } },
      ],
    },
    { logger: log.logger },
  );
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server.stop();
  await sink.close();
});

async function connectFrom(address: string): Promise<SmtpTestClient> {
  const client = await server.connect({ proxyHeader: proxyFrom(address) });
  clients.push(client);
  expect(client.greeting.code).toBe(220);
  expect((await client.command("EHLO client.example")).code).toBe(250);
  return client;
}

describe("open relay attempts from an untrusted client", () => {
  test.each([
    ["<victim@evil.example>", 550, "5.7.1"],
    ["<victim%evil.example@local.example>", 550, "5.1.1"],
    ["<evil.example!victim@local.example>", 550, "5.1.1"],
    ["<@local.example:victim@evil.example>", 550, "5.7.1"],
    ["<postmaster@evil.example>", 550, "5.7.1"],
    ['<"victim@evil.example"@local.example>', 550, "5.1.1"],
    ["<victim@EVIL.Example>", 550, "5.7.1"],
    ["<victim@[127.0.0.1]>", 550, "5.7.1"],
    ["<victim@[IPv6:::1]>", 550, "5.7.1"],
    ["<victim@local.example.evil.example>", 550, "5.7.1"],
    ["<@evil.example,@other.example:victim@evil.example>", 550, "5.7.1"],
  ])("RCPT TO:%s gets %i %s", async (path, code, enhanced) => {
    const client = await connectFrom(UNTRUSTED);
    expect((await client.command("MAIL FROM:<spam@sender.example>")).code).toBe(250);
    const reply = await client.command(`RCPT TO:${path}`);
    expect(reply.code).toBe(code);
    expect(reply.enhanced).toBe(enhanced);
  });

  test("trailing-dot domain is never relayed", async () => {
    // The engine rejects the trailing dot as a syntax error before any plugin
    // runs; whatever it answers, it must not accept the recipient.
    const client = await connectFrom(UNTRUSTED);
    await client.command("MAIL FROM:<spam@sender.example>");
    for (const path of ["<victim@evil.example.>", "<victim@local.example.evil.example.>"]) {
      const reply = await client.command(`RCPT TO:${path}`);
      expect(reply.code).toBeGreaterThanOrEqual(500);
    }
  });

  test("source route to a local mailbox reaches that mailbox", async () => {
    const client = await connectFrom(UNTRUSTED);
    await client.command("MAIL FROM:<spam@sender.example>");
    const reply = await client.command("RCPT TO:<@evil.example:bob@local.example>");
    expect(reply.code).toBe(250);
  });

  test("sink receives nothing, local mail is still stored", async () => {
    const client = await connectFrom(UNTRUSTED);
    expect((await client.command("MAIL FROM:<spam@sender.example>")).code).toBe(250);
    const rows = [
      "<victim@evil.example>",
      "<victim%evil.example@local.example>",
      "<evil.example!victim@local.example>",
      "<@local.example:victim@evil.example>",
      "<postmaster@evil.example>",
    ];
    for (const row of rows) {
      expect((await client.command(`RCPT TO:${row}`)).code).toBe(550);
    }
    expect((await client.command("RCPT TO:<bob@local.example>")).code).toBe(250);
    const final = await client.data("Subject: hello\r\n\r\nbody\r\n");
    expect(final.code).toBe(250);

    expect(sink.connections).toBe(0);
    expect(sink.messages).toEqual([]);
    const bob = path.join(server.dir, "mail", "local.example", "bob", "Maildir", "new");
    const files = await readdir(bob);
    expect(files).toHaveLength(1);
    expect(await readFile(path.join(bob, files[0]!), "utf8")).toContain("Subject: hello");
  });

  test("refusal logs the client address, the reply does not", async () => {
    const client = await connectFrom(UNTRUSTED);
    await client.command("MAIL FROM:<spam@sender.example>");
    const reply = await client.command("RCPT TO:<victim@evil.example>");
    expect(reply.raw).toBe("550 5.7.1 Relaying denied");
    expect(reply.raw).not.toContain(UNTRUSTED);
    await client.command("QUIT");
    const entry = log.entries.find((candidate) => candidate.msg === "relaying denied");
    expect(entry).toMatchObject({
      plugin: "relay",
      remote: UNTRUSTED,
      sender: "spam@sender.example",
      recipient: "victim@evil.example",
    });
  });
});

test("trusted network relays to the sink", async () => {
  const client = await connectFrom(OFFICE);
  expect((await client.command("MAIL FROM:<clerk@local.example>")).code).toBe(250);
  expect((await client.command("RCPT TO:<victim@evil.example>")).code).toBe(250);
  const final = await client.data("Subject: report\r\n\r\nfigures\r\n");
  expect(final.code).toBe(250);
  expect(sink.messages).toHaveLength(1);
  expect(sink.messages[0]!.to).toEqual(["victim@evil.example"]);
  expect(sink.messages[0]!.data).toContain("Subject: report");
});
