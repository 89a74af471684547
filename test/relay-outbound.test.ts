import { readdir } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";
import { PLUGINS, proxyFrom, startSink, type Sink } from "../plugins/relay/test/helpers.js";

// The same open-relay attempts as in relay-open-relay.test.ts, with the real
// plugin-mx owning the outbound route and a static route that sends
// evil.example to the sink.

let sink: Sink;
let server: TestServer;

beforeEach(async () => {
  sink = await startSink();
  server = await startTestServer({
    server: { hostname: "mx.local.example", proxyProtocol: true },
    plugins: [
      { use: PLUGINS.relay, with: { localDomains: ["local.example"], trustedNetworks: ["192.0.2.0/24"] } },
      {
        use: "@mailroom/plugin-mx",
        with: {
          queueDir: "./queue",
          routes: { "evil.example": { host: "127.0.0.1", port: sink.port, tls: "none", allowLocal: true } },
        },
      },
    ],
  });
});

afterEach(async () => {
  await server.stop();
  await sink.close();
});

/** Lists every file under the queue folder. */
async function queueFiles(): Promise<string[]> {
  const entries = await readdir(path.join(server.dir, "queue"), { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => entry.name);
}

/** Waits until the sink has received `count` messages, for at most ten seconds. */
async function sinkReceives(count: number): Promise<void> {
  for (let i = 0; i < 200 && sink.messages.length < count; i++) await sleep(50);
}

test("plugin-mx sends nothing from an untrusted client", async () => {
  const spammer = await server.connect({ proxyHeader: proxyFrom("198.51.100.7") });
  await spammer.command("EHLO client.example");
  expect((await spammer.command("MAIL FROM:<spam@sender.example>")).code).toBe(250);
  for (const recipient of [
    "<victim@evil.example>",
    "<victim%evil.example@local.example>",
    "<evil.example!victim@local.example>",
    "<@local.example:victim@evil.example>",
    "<postmaster@evil.example>",
  ]) {
    expect((await spammer.command(`RCPT TO:${recipient}`)).code).toBe(550);
  }
  const data = await spammer.command("DATA");
  expect(data.code).toBe(554);
  spammer.close();
  const queued = await queueFiles();

  // Control: a trusted client's message does reach the sink, and it is the only one.
  const office = await server.connect({ proxyHeader: proxyFrom("192.0.2.10") });
  await office.command("EHLO office.example");
  await office.command("MAIL FROM:<clerk@local.example>");
  expect((await office.command("RCPT TO:<victim@evil.example>")).code).toBe(250);
  expect((await office.data("Subject: control\r\n\r\nbody\r\n")).code).toBe(250);
  office.close();
  await sinkReceives(1);

  expect(sink.messages).toHaveLength(1);
  expect(sink.messages[0]!.from).toBe("clerk@local.example");
  expect(sink.connections).toBe(1);
  expect(queued).toEqual([]);
});

test("relayed recipient without plugin-mx gets 451 at RCPT", async () => {
  const alone = await startTestServer({
    server: { hostname: "mx.local.example", proxyProtocol: true },
    plugins: [{ use: PLUGINS.relay, with: { localDomains: ["local.example"], trustedNetworks: ["192.0.2.0/24"] } }],
  });
  try {
    const office = await alone.connect({ proxyHeader: proxyFrom("192.0.2.10") });
    await office.command("EHLO office.example");
    await office.command("MAIL FROM:<clerk@local.example>");
    const reply = await office.command("RCPT TO:<friend@remote.example>");
    expect(reply.code).toBe(451);
    expect(reply.enhanced).toBe("4.3.0");
    expect((await office.command("DATA")).code).toBe(554);
    office.close();
  } finally {
    await alone.stop();
  }
});
