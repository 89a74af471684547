import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterEach, expect, test } from "vitest";
import { PLUGINS } from "../plugins/relay/test/helpers.js";

const servers: TestServer[] = [];
const clients: SmtpTestClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const server of servers.splice(0)) await server.stop();
});

async function start(vrfy: Record<string, unknown>, relay: Record<string, unknown> = {}) {
  const server = await startTestServer({
    server: { hostname: "mx.local.example" },
    plugins: [
      { use: PLUGINS.relay, with: relay },
      { use: PLUGINS.vrfy, with: vrfy },
      // NOTE: plugin-maildir adds to connection.failedLookups itself on top of
      // the engine's count, so with it each unknown RCPT counts twice. The
      // stand-in mailbox owner leaves the counting to the engine.
      {
        use: PLUGINS.mailboxes,
        with: {
          mailboxes: ["bob@local.example", "postmaster@local.example"],
          postmaster: "postmaster@local.example",
        },
      },
    ],
  });
  servers.push(server);
  return server;
}

async function open(server: TestServer): Promise<SmtpTestClient> {
  const client = await server.connect();
  clients.push(client);
  expect((await client.command("EHLO client.example")).code).toBe(250);
  return client;
}

async function expectClosedWith421(client: SmtpTestClient, command: string): Promise<void> {
  const reply = await client.command(command);
  expect(reply.code).toBe(421);
  expect(reply.enhanced).toBe("4.7.0");
  await client.closed();
  expect(client.isClosed).toBe(true);
}

const TRUSTED = { trustedNetworks: ["127.0.0.0/8"] };

test("VRFY and RCPT failures add up", async () => {
  const client = await open(await start({ mode: "verify", maxFailures: 3 }, TRUSTED));
  expect((await client.command("VRFY nosuch")).code).toBe(550);
  await client.command("MAIL FROM:<a@sender.example>");
  expect((await client.command("RCPT TO:<nobody@local.example>")).enhanced).toBe("5.1.1");
  expect((await client.command("VRFY <missing@local.example>")).code).toBe(550);
  await expectClosedWith421(client, "VRFY bob");
});

test("limit applies at RCPT", async () => {
  const client = await open(await start({ mode: "verify", maxFailures: 2 }, TRUSTED));
  expect((await client.command("VRFY nosuch")).code).toBe(550);
  await client.command("MAIL FROM:<a@sender.example>");
  expect((await client.command("RCPT TO:<nobody@local.example>")).code).toBe(550);
  await expectClosedWith421(client, "RCPT TO:<bob@local.example>");
});

test("answers stay normal below the limit", async () => {
  const client = await open(await start({ mode: "verify", maxFailures: 3 }, TRUSTED));
  expect((await client.command("VRFY nosuch")).code).toBe(550);
  expect((await client.command("VRFY other")).code).toBe(550);
  expect((await client.command("VRFY bob")).code).toBe(250);
  await client.command("MAIL FROM:<a@sender.example>");
  expect((await client.command("RCPT TO:<bob@local.example>")).code).toBe(250);
  expect(client.isClosed).toBe(false);
});

test("default limit is ten failed RCPTs", async () => {
  const server = await start({});
  const client = await open(server);
  await client.command("MAIL FROM:<a@sender.example>");
  for (let i = 0; i < 10; i++) {
    const reply = await client.command(`RCPT TO:<guess${i}@local.example>`);
    expect(reply.code).toBe(550);
    expect(reply.enhanced).toBe("5.1.1");
  }
  await expectClosedWith421(client, "RCPT TO:<bob@local.example>");

  // The count belongs to the connection: a new one starts from zero.
  const next = await open(server);
  await next.command("MAIL FROM:<a@sender.example>");
  expect((await next.command("RCPT TO:<bob@local.example>")).code).toBe(250);
});

test("ambiguous VRFY never counts as a failure", async () => {
  const client = await open(await start({ maxFailures: 1 }));
  for (let i = 0; i < 5; i++) {
    expect((await client.command(`VRFY guess${i}`)).code).toBe(252);
  }
  await client.command("MAIL FROM:<a@sender.example>");
  expect((await client.command("RCPT TO:<nobody@local.example>")).code).toBe(550);
  await expectClosedWith421(client, "VRFY bob");
});

test("relay refusals are not lookup failures", async () => {
  const client = await open(await start({ maxFailures: 1 }));
  await client.command("MAIL FROM:<a@sender.example>");
  for (let i = 0; i < 3; i++) {
    const reply = await client.command(`RCPT TO:<victim${i}@evil.example>`);
    expect(reply.enhanced).toBe("5.7.1");
  }
  expect((await client.command("RCPT TO:<bob@local.example>")).code).toBe(250);
});
