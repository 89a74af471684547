import { container, TOKENS, type UserDirectory } from "@mailroom/core";
import { SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, describe, expect, test } from "vitest";
import { PLUGINS, proxyFrom } from "../plugins/relay/test/helpers.js";

const servers: TestServer[] = [];
const clients: SmtpTestClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const server of servers.splice(0)) await server.stop();
});

const MAILBOXES = {
  use: PLUGINS.mailboxes,
  with: {
    mailboxes: ["bob@local.example", "postmaster@local.example"],
    postmaster: "postmaster@local.example",
    users: { alice: "correct horse" },
  },
};

async function start(relay: Record<string, unknown>, server: Record<string, unknown> = {}) {
  const started = await startTestServer({
    server: { hostname: "mx.local.example", allowInsecureAuth: true, ...server },
    plugins: [{ use: PLUGINS.relay, with: relay }, MAILBOXES],
  });
  servers.push(started);
  return started;
}

async function open(port: number, host: string, proxyHeader?: string): Promise<SmtpTestClient> {
  const client = await SmtpTestClient.connect(port, host, proxyHeader ? { proxyHeader } : {});
  clients.push(client);
  expect((await client.command("EHLO client.example")).code).toBe(250);
  return client;
}

/** Sends MAIL and one RCPT; returns the RCPT reply. */
async function tryRelay(client: SmtpTestClient, from = "a@sender.example") {
  expect((await client.command(`MAIL FROM:<${from}>`)).code).toBe(250);
  const reply = await client.command("RCPT TO:<victim@evil.example>");
  await client.command("RSET");
  return reply;
}

async function authenticate(client: SmtpTestClient, user: string, password: string) {
  const token = Buffer.from(`\0${user}\0${password}`).toString("base64");
  return client.command(`AUTH PLAIN ${token}`);
}

function portOf(server: TestServer, host: string): number {
  return server.addresses.find((address) => address.host === host)!.port;
}

describe("loopback clients", () => {
  test("127.0.0.1 relays when 127.0.0.0/8 is trusted, ::1 does not", async () => {
    const server = await start(
      { localDomains: ["local.example"], trustedNetworks: ["127.0.0.0/8"] },
      { listen: ["127.0.0.1:0", "[::1]:0"] },
    );
    const v4 = await open(portOf(server, "127.0.0.1"), "127.0.0.1");
    expect((await tryRelay(v4)).code).toBe(250);
    const v6 = await open(portOf(server, "::1"), "::1");
    const denied = await tryRelay(v6);
    expect(denied.code).toBe(550);
    expect(denied.enhanced).toBe("5.7.1");
  });

  test("::1 relays when ::1/128 is trusted, 127.0.0.1 does not", async () => {
    const server = await start(
      { localDomains: ["local.example"], trustedNetworks: ["::1/128"] },
      { listen: ["127.0.0.1:0", "[::1]:0"] },
    );
    const v6 = await open(portOf(server, "::1"), "::1");
    expect((await tryRelay(v6)).code).toBe(250);
    const v4 = await open(portOf(server, "127.0.0.1"), "127.0.0.1");
    expect((await tryRelay(v4)).code).toBe(550);
  });

  test("connection records whether the client may relay", async () => {
    const server = await start(
      { localDomains: ["local.example"], trustedNetworks: ["127.0.0.1"] },
      { listen: ["127.0.0.1:0", "[::1]:0"] },
    );
    const trusted = await open(portOf(server, "127.0.0.1"), "127.0.0.1");
    expect((await trusted.command("XRELAYING")).raw).toBe("250 2.0.0 relaying=true");
    const untrusted = await open(portOf(server, "::1"), "::1");
    expect((await untrusted.command("XRELAYING")).raw).toBe("250 2.0.0 relaying=false");
  });
});

describe("client address from a PROXY header", () => {
  test("mapped IPv6 client matches its IPv4 range", async () => {
    const server = await start(
      { localDomains: ["local.example"], trustedNetworks: ["198.51.100.0/24"] },
      { proxyProtocol: true },
    );
    const mapped = await open(server.port, server.host, proxyFrom("::ffff:198.51.100.7"));
    expect((await tryRelay(mapped)).code).toBe(250);
    const outside = await open(server.port, server.host, proxyFrom("203.0.113.7"));
    expect((await tryRelay(outside)).code).toBe(550);
    const v6 = await open(server.port, server.host, proxyFrom("2001:db8::7"));
    expect((await tryRelay(v6)).code).toBe(550);
  });

  test("IPv6 client matches an IPv6 range", async () => {
    const server = await start(
      { localDomains: ["local.example"], trustedNetworks: ["2001:db8::/32"] },
      { proxyProtocol: true },
    );
    const inside = await open(server.port, server.host, proxyFrom("2001:db8:1::7"));
    expect((await tryRelay(inside)).code).toBe(250);
    const outside = await open(server.port, server.host, proxyFrom("2001:db9::7"));
    expect((await tryRelay(outside)).code).toBe(550);
  });

  test("relay domains are accepted from anyone", async () => {
    const server = await start(
      { localDomains: ["local.example"], relayDomains: ["Backup.Example."] },
      { proxyProtocol: true },
    );
    const client = await open(server.port, server.host, proxyFrom("203.0.113.7"));
    await client.command("MAIL FROM:<a@sender.example>");
    expect((await client.command("RCPT TO:<someone@backup.example>")).code).toBe(250);
    expect((await client.command("RCPT TO:<someone@sub.backup.example>")).code).toBe(550);
  });
});

describe("authenticated clients", () => {
  test("may relay after AUTH", async () => {
    const server = await start({ localDomains: ["local.example"] });
    const client = await open(server.port, server.host);
    expect((await tryRelay(client)).code).toBe(550);
    expect((await client.command("XRELAYING")).raw).toBe("250 2.0.0 relaying=false");
    expect((await authenticate(client, "alice", "correct horse")).code).toBe(235);
    expect((await tryRelay(client)).code).toBe(250);
    expect((await client.command("XRELAYING")).raw).toBe("250 2.0.0 relaying=true");
  });

  test("may not relay with allowAuthenticated off", async () => {
    const server = await start({ localDomains: ["local.example"], allowAuthenticated: false });
    const client = await open(server.port, server.host);
    expect((await authenticate(client, "alice", "correct horse")).code).toBe(235);
    const reply = await tryRelay(client);
    expect(reply.code).toBe(550);
    expect(reply.enhanced).toBe("5.7.1");
  });

  test("failed AUTH does not open the relay", async () => {
    const server = await start({ localDomains: ["local.example"] });
    const client = await open(server.port, server.host);
    expect((await authenticate(client, "alice", "wrong")).code).toBe(535);
    expect((await tryRelay(client)).code).toBe(550);
  });
});

describe("localSendersRequireAuth", () => {
  test("rejects a local sender until the client authenticates", async () => {
    const server = await start({ localDomains: ["local.example"], localSendersRequireAuth: true });
    const client = await open(server.port, server.host);
    const rejected = await client.command("MAIL FROM:<bob@Local.Example>");
    expect(rejected.code).toBe(550);
    expect(rejected.enhanced).toBe("5.7.1");
    expect((await client.command("MAIL FROM:<>")).code).toBe(250);
    await client.command("RSET");
    expect((await client.command("MAIL FROM:<a@sender.example>")).code).toBe(250);
    await client.command("RSET");
    expect((await authenticate(client, "alice", "correct horse")).code).toBe(235);
    expect((await client.command("MAIL FROM:<bob@local.example>")).code).toBe(250);
  });

  test("lets a trusted network use a local sender", async () => {
    const server = await start({
      localDomains: ["local.example"],
      trustedNetworks: ["127.0.0.0/8"],
      localSendersRequireAuth: true,
    });
    const client = await open(server.port, server.host);
    expect((await client.command("MAIL FROM:<bob@local.example>")).code).toBe(250);
  });

  test("is off by default", async () => {
    const server = await start({ localDomains: ["local.example"] });
    const client = await open(server.port, server.host);
    expect((await client.command("MAIL FROM:<bob@local.example>")).code).toBe(250);
  });
});

describe("local domains from the directory", () => {
  test("come from a directory registered by a later plugin", async () => {
    const server = await start({});
    const client = await open(server.port, server.host);
    await client.command("MAIL FROM:<a@sender.example>");
    expect((await client.command("RCPT TO:<bob@local.example>")).code).toBe(250);
    const unknown = await client.command("RCPT TO:<nobody@local.example>");
    expect(unknown.code).toBe(550);
    expect(unknown.enhanced).toBe("5.1.1");
    const remote = await client.command("RCPT TO:<victim@evil.example>");
    expect(remote.code).toBe(550);
    expect(remote.enhanced).toBe("5.7.1");
  });

  test("configured localDomains replace the directory's", async () => {
    const server = await start({ localDomains: ["other.example"] });
    const client = await open(server.port, server.host);
    await client.command("MAIL FROM:<a@sender.example>");
    const reply = await client.command("RCPT TO:<bob@local.example>");
    expect(reply.code).toBe(550);
    expect(reply.enhanced).toBe("5.7.1");
  });

  test("address literal is local only when configured", async () => {
    const server = await start({ localDomains: ["local.example", "[127.0.0.1]"] });
    const client = await open(server.port, server.host);
    await client.command("MAIL FROM:<a@sender.example>");
    // The relay plugin passes it on, and no mailbox owner takes it, so the
    // engine's default refusal applies.
    const literal = await client.command("RCPT TO:<bob@[127.0.0.1]>");
    expect(literal.raw).toBe("550 5.7.1 Recipient not accepted");
    const other = await client.command("RCPT TO:<bob@[127.0.0.2]>");
    expect(other.raw).toBe("550 5.7.1 Relaying denied");
  });
});

test("failing directory gets 451 4.3.0", async () => {
  const broken: UserDirectory = {
    domains: () => Promise.reject(new Error("directory offline")),
    lookup: () => null,
    findLocalPart: () => [],
  };
  const parent = container.createChildContainer();
  parent.register(TOKENS.UserDirectory, { useValue: broken });
  const server = await startTestServer(
    { server: { hostname: "mx.local.example" }, plugins: [{ use: PLUGINS.relay }] },
    { container: parent },
  );
  servers.push(server);
  const client = await open(server.port, server.host);
  await client.command("MAIL FROM:<a@sender.example>");
  const reply = await client.command("RCPT TO:<bob@local.example>");
  expect(reply.code).toBe(451);
  expect(reply.enhanced).toBe("4.3.0");
  expect((await client.command("NOOP")).code).toBe(250);
});

describe("invalid options", () => {
  test.each([
    [{ trustedNetworks: ["10.1.2.3/8"] }, /trustedNetworks\[0\]: invalid network "10\.1\.2\.3\/8": bits are set/],
    [{ trustedNetworks: ["office"] }, /trustedNetworks\[0\]: invalid network "office"/],
    [{ localDomains: ["user@local.example"] }, /localDomains\[0\]: invalid domain "user@local.example"/],
    [{ relayDomains: "backup.example" }, /relayDomains/],
    [{ trustedNetwork: ["127.0.0.1"] }, /trustedNetwork/],
  ])("%j stops the server", async (options, message) => {
    await expect(start(options)).rejects.toThrow(message);
  });
});
