import { mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TOKENS, type OutboundQueue } from "@mailroom/core";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterEach, describe, expect, test } from "vitest";
import { readWithPython } from "../plugins/maildir/test-support/read-maildir.js";
import { PLUGINS, recordingLogger } from "../plugins/relay/test/helpers.js";
import { makeServerDir, startDns, startMailroom, startRemoteMx, submit, waitFor } from "./mx-kit.js";

// International domains reach the server as U-labels (from SMTPUTF8 clients)
// or as A-labels (from everyone else); both must reach the same mailbox.
const BUECHER = { u: "bücher.example", a: "xn--bcher-kva.example" };
const MUENCHEN = { u: "münchen.example", a: "xn--mnchen-3ya.example" };
const KOELN = { u: "köln.example", a: "xn--kln-sna.example" };
const MX_PLUGIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../plugins/mx/src/index.ts");

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function start(config: Record<string, unknown>, options: Parameters<typeof startTestServer>[1] = {}): Promise<TestServer> {
  const server = await startTestServer({ server: { hostname: "mx.example.test" }, ...config }, options);
  cleanup.push(() => server.stop());
  return server;
}

async function open(server: TestServer): Promise<SmtpTestClient> {
  const client = await server.connect();
  cleanup.push(async () => client.close());
  expect((await client.command("EHLO client.example")).code).toBe(250);
  return client;
}

/** Sends one message to `recipient`; returns the RCPT reply and the reply after the final dot. */
async function deliver(server: TestServer, recipient: string, utf8: boolean) {
  const client = await open(server);
  expect((await client.command(`MAIL FROM:<sender@remote.example>${utf8 ? " SMTPUTF8" : ""}`)).code).toBe(250);
  const rcpt = await client.command(`RCPT TO:<${recipient}>`);
  const data = rcpt.code === 250 ? await client.data(`Subject: to ${recipient}\r\n\r\nhello\r\n`) : undefined;
  await client.command("QUIT");
  return { rcpt, data };
}

/**
 * Starts a server with relay (local domains from the directory) and maildir.
 * One domain is configured as U-labels, the other as A-labels, and the
 * postmaster address is in the other form of its domain.
 */
async function startMaildirServer(): Promise<TestServer> {
  return start({
    plugins: [
      { use: PLUGINS.relay },
      {
        use: "@mailroom/plugin-maildir",
        with: {
          root: "./mail",
          postmaster: `postmaster@${MUENCHEN.u}`,
          domains: {
            [BUECHER.u]: { mailboxes: ["alice"], aliases: { info: "alice" } },
            [MUENCHEN.a]: { mailboxes: ["bob", "postmaster"] },
          },
        },
      },
    ],
  });
}

describe("maildir and relay", () => {
  const envelopes = [
    ["U-label with SMTPUTF8", "u", true],
    ["A-label without SMTPUTF8", "a", false],
    ["A-label with SMTPUTF8", "a", true],
  ] as const;

  test.each([
    ["configured as U-labels", BUECHER, "alice"],
    ["configured as A-labels", MUENCHEN, "bob"],
  ])("domain %s gets mail in both forms", async (_name, domain, mailbox) => {
    const server = await startMaildirServer();
    for (const [form, key, utf8] of envelopes) {
      const { rcpt, data } = await deliver(server, `${mailbox}@${domain[key]}`, utf8);
      expect(rcpt.raw, form).toMatch(/^250 2\.1\.5/);
      expect(data?.code, form).toBe(250);
    }

    // Every copy lands in one mailbox, in the folder named after the A-label.
    expect(await readdir(path.join(server.dir, "mail"))).toEqual([BUECHER.a, MUENCHEN.a].filter((name) => name === domain.a));
    const messages = await readWithPython(path.join(server.dir, "mail", domain.a, mailbox, "Maildir"));
    expect(messages).toHaveLength(envelopes.length);
    for (const message of messages) expect(message.deliveredTo).toBe(`${mailbox}@${domain.a}`);
  });

  test("U-label recipient without SMTPUTF8 is a syntax error", async () => {
    const server = await startMaildirServer();
    const { rcpt } = await deliver(server, `alice@${BUECHER.u}`, false);
    expect(rcpt.code).toBe(501);
    expect(rcpt.enhanced).toBe("5.1.3");
  });

  test("alias, postmaster and unknown users match in both forms", async () => {
    const server = await startMaildirServer();
    const client = await open(server);
    expect((await client.command("MAIL FROM:<sender@remote.example> SMTPUTF8")).code).toBe(250);
    expect((await client.command(`RCPT TO:<info@${BUECHER.a}>`)).code).toBe(250);
    expect((await client.command(`RCPT TO:<INFO@${BUECHER.u}>`)).code).toBe(250);
    expect((await client.command(`RCPT TO:<postmaster@${BUECHER.a}>`)).code).toBe(250);
    expect((await client.command(`RCPT TO:<postmaster@${MUENCHEN.u}>`)).code).toBe(250);
    const unknown = await client.command(`RCPT TO:<nobody@${BUECHER.a}>`);
    expect(unknown.raw).toBe("550 5.1.1 Mailbox unavailable: no such user here");
    const remote = await client.command("RCPT TO:<alice@bucher.example>");
    expect(remote.raw).toBe("550 5.7.1 Relaying denied");
    expect((await client.data("Subject: several\r\n\r\nhello\r\n")).code).toBe(250);

    const alice = await readWithPython(path.join(server.dir, "mail", BUECHER.a, "alice", "Maildir"));
    expect(alice).toHaveLength(1);
    const postmaster = await readWithPython(path.join(server.dir, "mail", MUENCHEN.a, "postmaster", "Maildir"));
    expect(postmaster).toHaveLength(1);
  });

  test("VRFY finds users in both forms", async () => {
    const server = await start({
      plugins: [
        { use: PLUGINS.relay, with: { trustedNetworks: ["127.0.0.1"] } },
        { use: PLUGINS.vrfy, with: { mode: "verify" } },
        { use: "@mailroom/plugin-maildir", with: { root: "./mail", domains: { [BUECHER.u]: { mailboxes: ["alice"] } } } },
      ],
    });
    const client = await open(server);
    expect((await client.command(`VRFY alice@${BUECHER.a}`)).raw).toBe(`250 2.1.5 alice@${BUECHER.a}`);
    expect((await client.command(`VRFY <alice@${BUECHER.u}>`)).raw).toBe(`250 2.1.5 alice@${BUECHER.a}`);
    expect((await client.command(`VRFY nobody@${BUECHER.a}`)).raw).toBe("550 5.1.1 Mailbox not found");
    expect((await client.command(`VRFY alice@${MUENCHEN.a}`)).code).toBe(252);
  });
});

describe("relay options", () => {
  async function startRelay() {
    return start({
      plugins: [
        {
          use: PLUGINS.relay,
          with: { localDomains: [BUECHER.u, MUENCHEN.a], relayDomains: [KOELN.u] },
        },
        {
          use: "@mailroom/plugin-maildir",
          with: { root: "./mail", domains: { [BUECHER.a]: { mailboxes: ["alice"] }, [MUENCHEN.u]: { mailboxes: ["bob"] } } },
        },
        { use: MX_PLUGIN, with: { queueDir: "./queue", deliver: false } },
      ],
    });
  }

  test("local domains match in both forms", async () => {
    const server = await startRelay();
    const client = await open(server);
    expect((await client.command("MAIL FROM:<sender@remote.example> SMTPUTF8")).code).toBe(250);
    for (const recipient of [`alice@${BUECHER.a}`, `alice@${BUECHER.u}`, `bob@${MUENCHEN.a}`, `bob@${MUENCHEN.u}`]) {
      expect((await client.command(`RCPT TO:<${recipient}>`)).raw, recipient).toMatch(/^250 2\.1\.5/);
    }
    expect((await client.command(`RCPT TO:<nobody@${MUENCHEN.u}>`)).raw).toMatch(/^550 5\.1\.1/);
  });

  test("relay domains match in both forms and share one queue record", async () => {
    const server = await startRelay();
    const client = await open(server);
    expect((await client.command("MAIL FROM:<sender@remote.example> SMTPUTF8")).code).toBe(250);
    expect((await client.command(`RCPT TO:<anna@${KOELN.a}>`)).code).toBe(250);
    expect((await client.command(`RCPT TO:<ben@${KOELN.u}>`)).code).toBe(250);
    expect((await client.command("RCPT TO:<carl@koln.example>")).raw).toBe("550 5.7.1 Relaying denied");
    expect((await client.data("Subject: relayed\r\n\r\nhello\r\n")).code).toBe(250);

    const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
    const records = await queue.list();
    expect(records.map((record) => record.domain)).toEqual([KOELN.a]);
    expect(records[0]!.recipients).toEqual([`anna@${KOELN.a}`, `ben@${KOELN.u}`]);
  });
});

describe("plugin-mx", () => {
  test("static route for a U-label domain carries A-label recipients", async () => {
    const remote = await startRemoteMx();
    cleanup.push(() => remote.close());
    const dns = await startDns({});
    cleanup.push(() => dns.close());
    const dir = await makeServerDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const server = await startMailroom({
      dir,
      dns,
      mx: { allowLocalDestinations: false, routes: { [BUECHER.u]: { host: "127.0.0.1", port: remote.port, tls: "none", allowLocal: true } } },
    });
    cleanup.push(() => server.stop());

    expect(await submit(server, "alice@local.test", [`bob@${BUECHER.a}`])).toEqual([250, 250, 250, 250]);
    await waitFor(() => remote.received.length === 1, "delivery over the route");
    // smtp-server reports the domain of a received address as U-labels.
    expect(remote.received[0]!.to).toEqual([`bob@${BUECHER.u}`]);
    // The route replaced DNS entirely.
    expect(dns.queries).toEqual([]);
  });

  test("MX lookup of a U-label domain asks for its A-labels", async () => {
    const remote = await startRemoteMx();
    cleanup.push(() => remote.close());
    const dns = await startDns({ [MUENCHEN.a]: { MX: [[10, `mx.${MUENCHEN.a}`]] }, [`mx.${MUENCHEN.a}`]: { A: ["127.0.0.1"] } });
    cleanup.push(() => dns.close());
    const dir = await makeServerDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const server = await startMailroom({ dir, dns, mx: { port: remote.port } });
    cleanup.push(() => server.stop());

    const client = await server.connect();
    cleanup.push(async () => client.close());
    await client.command("EHLO client.example");
    expect((await client.command("MAIL FROM:<alice@local.test> SMTPUTF8")).code).toBe(250);
    expect((await client.command(`RCPT TO:<bob@${MUENCHEN.a}>`)).code).toBe(250);
    expect((await client.data("Subject: lookup\r\n\r\nhello\r\n")).code).toBe(250);
    await waitFor(() => remote.received.length === 1, "delivery through the MX");
    expect(dns.queries[0]).toEqual({ name: MUENCHEN.a, type: "MX" });
  });
});

describe("invalid international domains in the config", () => {
  test.each([
    [
      "maildir domain",
      [{ use: "@mailroom/plugin-maildir", with: { root: "./mail", domains: { "xn--zz.example": { mailboxes: ["a"] } } } }],
      /plugins\[0\]\.with\.domains\.xn--zz\.example: invalid international domain name "xn--zz\.example"/,
    ],
    [
      "maildir domain in two forms",
      [{ use: "@mailroom/plugin-maildir", with: { root: "./mail", domains: { [BUECHER.u]: {}, [BUECHER.a]: {} } } }],
      /plugins\[0\]\.with\.domains\.xn--bcher-kva\.example: domain xn--bcher-kva\.example is listed twice, as "bücher\.example" and "xn--bcher-kva\.example"/,
    ],
    [
      "relay local domain",
      // A label may not start with a combining mark (RFC 5891 section 5.4).
      [{ use: PLUGINS.relay, with: { localDomains: ["\u0301bucher.example"] } }],
      /plugins\[0\]\.with\.localDomains\[0\]: invalid international domain name/,
    ],
    [
      "mx route",
      [{ use: MX_PLUGIN, with: { queueDir: "./queue", routes: { "xn--a.example": { host: "127.0.0.1" } } } }],
      /plugins\[0\]\.with\.routes\.xn--a\.example: invalid international domain name "xn--a\.example"/,
    ],
    [
      "mx tls.requireFor",
      [{ use: MX_PLUGIN, with: { queueDir: "./queue", tls: { requireFor: ["xn--zz.example"] } } }],
      /plugins\[0\]\.with\.tls\.requireFor\[0\]: invalid international domain name/,
    ],
  ])("%s stops the server", async (_name, plugins, message) => {
    await expect(start({ plugins })).rejects.toThrow(message);
  });
});

test("maildir warns about an old folder under the U-label name", async () => {
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, "mail", BUECHER.u, "alice", "Maildir", "new"), { recursive: true });
  const { logger, entries } = recordingLogger();
  await start(
    { plugins: [{ use: "@mailroom/plugin-maildir", with: { root: "./mail", domains: { [BUECHER.u]: { mailboxes: ["alice"] } } } }] },
    { dir, logger },
  );
  const warning = await waitFor(() => entries.find((entry) => entry.level === 40 && entry.domain === BUECHER.u), "the warning");
  expect(warning.folder).toBe(path.join(dir, "mail", BUECHER.u));
  expect(warning.expected).toBe(path.join(dir, "mail", BUECHER.a));
});
