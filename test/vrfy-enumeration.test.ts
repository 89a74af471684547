import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
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
      "local.example": { mailboxes: ["bob", "alice", "postmaster"], aliases: { staff: "alice" } },
    },
  },
};

async function start(vrfy: Record<string, unknown> | undefined, relay: Record<string, unknown> = {}) {
  const server = await startTestServer({
    server: { hostname: "mx.local.example" },
    plugins: [
      { use: PLUGINS.relay, with: relay },
      vrfy === undefined ? { use: PLUGINS.vrfy } : { use: PLUGINS.vrfy, with: vrfy },
      MAILDIR,
    ],
  });
  servers.push(server);
  const client = await server.connect();
  clients.push(client);
  expect((await client.command("EHLO client.example")).code).toBe(250);
  return client;
}

const PROBES = ["VRFY bob", "VRFY nosuch", "VRFY <bob@local.example>", "VRFY <nosuch@local.example>"];

describe("default policy", () => {
  test("every VRFY gets the same 252 reply", async () => {
    const client = await start(undefined);
    const replies = [];
    for (const probe of PROBES) replies.push(await client.command(probe));
    for (const reply of replies) {
      expect(reply.code).toBe(252);
      expect(reply.enhanced).toBe("2.1.5");
    }
    expect(new Set(replies.map((reply) => reply.raw)).size).toBe(1);
  });

  test("EXPN lists no members", async () => {
    const client = await start(undefined);
    const reply = await client.command("EXPN staff");
    expect(reply.raw).toBe("502 5.5.1 EXPN not available");
    expect(reply.raw).not.toContain("alice");
  });

  test("bare VRFY and EXPN are syntax errors", async () => {
    const client = await start(undefined);
    const vrfy = await client.command("VRFY");
    expect(vrfy.code).toBe(501);
    expect(vrfy.enhanced).toBe("5.5.4");
    const expn = await client.command("EXPN");
    expect(expn.code).toBe(501);
    expect(expn.enhanced).toBe("5.5.4");
  });

  test("trusted clients get 252 too", async () => {
    const client = await start(undefined, { trustedNetworks: ["127.0.0.0/8"] });
    for (const probe of PROBES) {
      expect((await client.command(probe)).code).toBe(252);
    }
  });

  test("RCPT still tells users apart", async () => {
    // VRFY hides nothing that RCPT gives away, so the failure limit guards RCPT.
    const client = await start(undefined);
    await client.command("MAIL FROM:<a@sender.example>");
    expect((await client.command("RCPT TO:<bob@local.example>")).code).toBe(250);
    expect((await client.command("RCPT TO:<nosuch@local.example>")).enhanced).toBe("5.1.1");
  });
});

describe("other modes", () => {
  test("EXPN in ambiguous mode gets 252", async () => {
    const client = await start({ expn: "ambiguous" });
    const reply = await client.command("EXPN staff");
    expect(reply.code).toBe(252);
    expect(reply.enhanced).toBe("2.1.5");
    expect(reply.raw).not.toContain("alice");
  });

  test("refuse mode gets 502 for every client", async () => {
    const client = await start({ mode: "refuse" }, { trustedNetworks: ["127.0.0.0/8"] });
    for (const probe of PROBES) {
      const reply = await client.command(probe);
      expect(reply.code).toBe(502);
      expect(reply.enhanced).toBe("5.5.1");
    }
  });

  test.each(["ambiguous", "verify", "refuse"])("bare VRFY gets 501 in %s mode", async (mode) => {
    const client = await start({ mode }, { trustedNetworks: ["127.0.0.0/8"] });
    const reply = await client.command("VRFY");
    expect(reply.code).toBe(501);
    expect(reply.enhanced).toBe("5.5.4");
  });

  test("verify mode answers trusted clients for real", async () => {
    const client = await start({ mode: "verify" }, { trustedNetworks: ["127.0.0.0/8"] });
    expect((await client.command("VRFY bob")).raw).toBe("250 2.1.5 bob@local.example");
    expect((await client.command("VRFY nosuch")).raw).toBe("550 5.1.1 Mailbox not found");
    expect((await client.command("VRFY <bob@local.example>")).code).toBe(250);
    expect((await client.command("VRFY <nosuch@local.example>")).code).toBe(550);
    expect((await client.command("EXPN staff")).code).toBe(502);
  });
});

describe("invalid options", () => {
  test.each([
    [{ mode: "open" }, /mode/],
    [{ verifyFrom: [] }, /verifyFrom: list at least one of trusted, authenticated/],
    [{ verifyFrom: ["everyone"] }, /verifyFrom\[0\]/],
    [{ maxFailures: 0 }, /maxFailures/],
    [{ expn: "list" }, /expn/],
  ])("%j stops the server", async (options, message) => {
    await expect(start(options)).rejects.toThrow(message);
  });
});
