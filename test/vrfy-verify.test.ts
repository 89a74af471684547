import { container, TOKENS, type UserDirectory } from "@mailroom/core";
import { SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, describe, expect, test } from "vitest";
import { PLUGINS } from "../plugins/relay/test/helpers.js";

const servers: TestServer[] = [];
const clients: SmtpTestClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const server of servers.splice(0)) await server.stop();
});

const MAILDIR = {
  use: "@mailroom/plugin-maildir",
  with: {
    root: "./mail",
    postmaster: "postmaster@local.example",
    domains: {
      "local.example": { mailboxes: ["bob", "sales", "postmaster"], aliases: { info: "bob" } },
      "other.example": { mailboxes: ["sales"] },
    },
  },
};

/** A stand-in directory with AUTH, for the tests that authenticate. */
const MAILBOXES_WITH_AUTH = {
  use: PLUGINS.mailboxes,
  with: {
    mailboxes: ["bob@local.example", "postmaster@local.example"],
    postmaster: "postmaster@local.example",
    users: { alice: "correct horse" },
  },
};

async function start(options: {
  vrfy: Record<string, unknown>;
  relay?: Record<string, unknown>;
  owner?: Record<string, unknown>;
}): Promise<TestServer> {
  const server = await startTestServer({
    server: { hostname: "mx.local.example", listen: ["127.0.0.1:0", "[::1]:0"], allowInsecureAuth: true },
    plugins: [
      { use: PLUGINS.relay, with: options.relay ?? { trustedNetworks: ["127.0.0.0/8"] } },
      { use: PLUGINS.vrfy, with: options.vrfy },
      options.owner ?? MAILDIR,
    ],
  });
  servers.push(server);
  return server;
}

async function open(server: TestServer, host: "127.0.0.1" | "::1"): Promise<SmtpTestClient> {
  const port = server.addresses.find((address) => address.host === host)!.port;
  const client = await SmtpTestClient.connect(port, host);
  clients.push(client);
  expect((await client.command("EHLO client.example")).code).toBe(250);
  return client;
}

async function authenticate(client: SmtpTestClient): Promise<void> {
  const token = Buffer.from("\0alice\0correct horse").toString("base64");
  expect((await client.command(`AUTH PLAIN ${token}`)).code).toBe(235);
}

describe("verify mode for a trusted client", () => {
  test.each([
    "VRFY bob",
    "VRFY Bob",
    "VRFY bob@local.example",
    "VRFY bob@LOCAL.EXAMPLE",
    "VRFY <bob@local.example>",
    "VRFY Bob Example <bob@local.example>",
    'VRFY "Example, Bob" <bob@local.example>',
    "VRFY info@local.example",
  ])("%s gets the mailbox", async (command) => {
    const client = await open(await start({ vrfy: { mode: "verify" } }), "127.0.0.1");
    expect((await client.command(command)).raw).toBe("250 2.1.5 bob@local.example");
  });

  test.each(["VRFY nosuch", "VRFY nosuch@local.example", "VRFY <nosuch@local.example>", "VRFY No Such <nosuch@other.example>"])(
    "%s gets 550 5.1.1",
    async (command) => {
      const client = await open(await start({ vrfy: { mode: "verify" } }), "127.0.0.1");
      expect((await client.command(command)).raw).toBe("550 5.1.1 Mailbox not found");
    },
  );

  test("local part in two domains is ambiguous", async () => {
    const client = await open(await start({ vrfy: { mode: "verify" } }), "127.0.0.1");
    const reply = await client.command("VRFY sales");
    expect(reply.code).toBe(553);
    expect(reply.enhanced).toBe("5.1.4");
    expect((await client.command("VRFY sales@other.example")).raw).toBe("250 2.1.5 sales@other.example");
  });

  test("remote address cannot be verified", async () => {
    const client = await open(await start({ vrfy: { mode: "verify" } }), "127.0.0.1");
    const reply = await client.command("VRFY someone@remote.example");
    expect(reply.code).toBe(252);
    expect(reply.enhanced).toBe("2.1.5");
  });

  test("malformed argument gets 501 5.5.4", async () => {
    const client = await open(await start({ vrfy: { mode: "verify" } }), "127.0.0.1");
    for (const command of ["VRFY Bob Example", "VRFY <bob@local.example", "VRFY bob@", "VRFY <>"]) {
      const reply = await client.command(command);
      expect(reply.code).toBe(501);
      expect(reply.enhanced).toBe("5.5.4");
    }
  });
});

describe("verify mode for other clients", () => {
  test("untrusted client gets 252 for everyone", async () => {
    const client = await open(await start({ vrfy: { mode: "verify" } }), "::1");
    const existing = await client.command("VRFY bob");
    const missing = await client.command("VRFY nosuch");
    expect(existing.raw).toBe("252 2.1.5 Cannot verify the user, but will accept the message");
    expect(missing.raw).toBe(existing.raw);
    expect((await client.command("VRFY Bob Example")).code).toBe(252);
  });

  test("authenticated client gets real answers", async () => {
    const server = await start({
      vrfy: { mode: "verify", verifyFrom: ["authenticated"] },
      owner: MAILBOXES_WITH_AUTH,
    });
    const client = await open(server, "::1");
    expect((await client.command("VRFY bob")).code).toBe(252);
    await authenticate(client);
    expect((await client.command("VRFY bob")).raw).toBe("250 2.1.5 bob@local.example");
    expect((await client.command("VRFY nosuch")).code).toBe(550);
  });

  test("trusted network is not enough for authenticated-only", async () => {
    const server = await start({
      vrfy: { mode: "verify", verifyFrom: ["authenticated"] },
      owner: MAILBOXES_WITH_AUTH,
    });
    const client = await open(server, "127.0.0.1");
    expect((await client.command("VRFY bob")).code).toBe(252);
    expect((await client.command("VRFY nosuch")).code).toBe(252);
  });

  test("authentication is not enough for trusted-only without relay rights", async () => {
    const server = await start({
      vrfy: { mode: "verify", verifyFrom: ["trusted"] },
      relay: { trustedNetworks: ["127.0.0.0/8"], allowAuthenticated: false },
      owner: MAILBOXES_WITH_AUTH,
    });
    const client = await open(server, "::1");
    await authenticate(client);
    expect((await client.command("VRFY bob")).code).toBe(252);
    const trusted = await open(server, "127.0.0.1");
    expect((await trusted.command("VRFY bob")).code).toBe(250);
  });
});

describe("directory problems", () => {
  test("failing directory gets 451 4.3.0", async () => {
    const broken: UserDirectory = {
      domains: () => ["local.example"],
      lookup: () => Promise.reject(new Error("directory offline")),
      findLocalPart: () => Promise.reject(new Error("directory offline")),
    };
    const parent = container.createChildContainer();
    parent.register(TOKENS.UserDirectory, { useValue: broken });
    const server = await startTestServer(
      {
        server: { hostname: "mx.local.example" },
        plugins: [
          { use: PLUGINS.relay, with: { trustedNetworks: ["127.0.0.0/8"] } },
          { use: PLUGINS.vrfy, with: { mode: "verify" } },
        ],
      },
      { container: parent },
    );
    servers.push(server);
    const client = await open(server, "127.0.0.1");
    for (const command of ["VRFY bob", "VRFY bob@local.example"]) {
      const reply = await client.command(command);
      expect(reply.code).toBe(451);
      expect(reply.enhanced).toBe("4.3.0");
    }
    expect((await client.command("NOOP")).code).toBe(250);
  });

  test("missing directory gets 252", async () => {
    const server = await startTestServer({
      server: { hostname: "mx.local.example" },
      plugins: [
        { use: PLUGINS.relay, with: { localDomains: ["local.example"], trustedNetworks: ["127.0.0.0/8"] } },
        { use: PLUGINS.vrfy, with: { mode: "verify" } },
      ],
    });
    servers.push(server);
    const client = await open(server, "127.0.0.1");
    const reply = await client.command("VRFY bob");
    expect(reply.code).toBe(252);
    expect(reply.enhanced).toBe("2.1.5");
  });
});
