import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { captureLogs, startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { base64, plainToken, readEnvelopes, writeFixedAuthPlugin, writeSinkPlugin } from "./auth-helpers.js";
import { makeCertificate, startTls, type TestCertificate } from "./tls-helpers.js";

const PASSWORD = "correct horse";

let certificate: TestCertificate;
let certs: string;

beforeAll(async () => {
  certs = await mkdtemp(path.join(os.tmpdir(), "mailroom-auth-certs-"));
  certificate = await makeCertificate(certs, "mx", "mx.test");
});

afterAll(async () => {
  await rm(certs, { recursive: true, force: true });
});

let server: TestServer | undefined;
let dir: string;
const clients: SmtpTestClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server?.stop();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

interface StartOptions {
  allowInsecureAuth?: boolean;
  authPlugin?: boolean;
  logLines?: string[];
  maxErrors?: number;
}

async function start(options: StartOptions = {}): Promise<TestServer> {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-auth-"));
  const plugins = [];
  if (options.authPlugin !== false) plugins.push({ use: await writeFixedAuthPlugin(dir) });
  plugins.push({ use: await writeSinkPlugin(dir) });
  const logger = options.logLines ? captureLogs("trace", options.logLines).logger : undefined;
  server = await startTestServer(
    {
      server: {
        hostname: "mx.test",
        tls: { key: certificate.keyPath, cert: certificate.certPath },
        allowInsecureAuth: options.allowInsecureAuth ?? false,
        ...(options.maxErrors ? { limits: { maxErrors: options.maxErrors } } : {}),
      },
      plugins,
    },
    { dir, ...(logger ? { logger } : {}) },
  );
  return server;
}

async function connect(): Promise<SmtpTestClient> {
  const client = await server!.connect();
  clients.push(client);
  return client;
}

/** Connects, upgrades with STARTTLS and sends the EHLO that TLS requires. */
async function connectSecure(): Promise<SmtpTestClient> {
  const client = await connect();
  await startTls(client, { servername: "mx.test", certificate });
  const ehlo = await client.command("EHLO client.example");
  expect(ehlo.code).toBe(250);
  return client;
}

describe("AUTH offer", () => {
  test("plaintext EHLO does not offer AUTH", async () => {
    await start();
    const client = await connect();
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines.some((line) => line.startsWith("AUTH"))).toBe(false);
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(reply.code).toBe(538);
    expect(reply.enhanced).toBe("5.7.11");
  });

  test("EHLO offers AUTH after STARTTLS", async () => {
    await start();
    const client = await connect();
    await startTls(client, { servername: "mx.test", certificate });
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines).toContain("AUTH PLAIN LOGIN");
  });

  test("allowInsecureAuth offers AUTH in plaintext", async () => {
    await start({ allowInsecureAuth: true });
    const client = await connect();
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines).toContain("AUTH PLAIN LOGIN");
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(reply.code).toBe(235);
  });

  test("AUTH is unavailable without an auth plugin", async () => {
    await start({ authPlugin: false });
    const client = await connectSecure();
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines.some((line) => line.startsWith("AUTH"))).toBe(false);
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(reply.code).toBe(502);
    expect(reply.enhanced).toBe("5.5.1");
  });
});

describe("AUTH exchange", () => {
  test("PLAIN with an initial response succeeds", async () => {
    await start();
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(reply.code).toBe(235);
    expect(reply.enhanced).toBe("2.7.0");
  });

  test("PLAIN without an initial response succeeds", async () => {
    await start();
    const client = await connectSecure();
    const challenge = await client.command("AUTH PLAIN");
    expect(challenge.code).toBe(334);
    const reply = await client.command(plainToken("alice", PASSWORD));
    expect(reply.code).toBe(235);
    expect(reply.enhanced).toBe("2.7.0");
  });

  test("LOGIN succeeds in two steps", async () => {
    await start();
    const client = await connectSecure();
    expect(await client.command("AUTH LOGIN")).toMatchObject({ code: 334, lines: ["VXNlcm5hbWU6"] });
    expect(await client.command(base64("alice"))).toMatchObject({ code: 334, lines: ["UGFzc3dvcmQ6"] });
    const reply = await client.command(base64(PASSWORD));
    expect(reply.code).toBe(235);
    expect(reply.enhanced).toBe("2.7.0");
  });

  test("credentials no plugin accepts get 535", async () => {
    await start();
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", "wrong")}`);
    expect(reply.code).toBe(535);
    expect(reply.enhanced).toBe("5.7.8");
    const login = await client.command(`AUTH LOGIN ${base64("mallory")}`);
    expect(login.code).toBe(334);
    const second = await client.command(base64("guess"));
    expect(second.code).toBe(535);
    expect(second.enhanced).toBe("5.7.8");
  });

  test("PLAIN authzid must match the user", async () => {
    await start();
    const client = await connectSecure();
    const token = (authzid: string, user: string) => Buffer.from(`${authzid}\0${user}\0${PASSWORD}`, "utf8").toString("base64");

    // Acting as another user would need proxy authorization, which Mailroom does not support.
    const other = await client.command(`AUTH PLAIN ${token("bob", "alice")}`);
    expect(other.code).toBe(535);
    expect(other.enhanced).toBe("5.7.8");

    const same = await client.command(`AUTH PLAIN ${token("alice", "alice")}`);
    expect(same.code).toBe(235);
  });

  test("PLAIN with only an authzid authenticates that user", async () => {
    await start();
    const client = await connectSecure();
    const token = Buffer.from(`alice\0\0${PASSWORD}`, "utf8").toString("base64");
    const reply = await client.command(`AUTH PLAIN ${token}`);
    expect(reply.code).toBe(235);
  });

  test("throwing plugin gets 454 and the session goes on", async () => {
    await start();
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${plainToken("boom", PASSWORD)}`);
    expect(reply.code).toBe(454);
    expect(reply.enhanced).toBe("4.7.0");
    expect(reply.lines.join(" ")).not.toContain("credential store");
    const retry = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(retry.code).toBe(235);
  });

  test("DENYSOFT from a plugin gets 454", async () => {
    await start();
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${plainToken("soft", PASSWORD)}`);
    expect(reply.code).toBe(454);
    expect(reply.enhanced).toBe("4.7.0");
  });

  test("plugin's own reply code reaches the client", async () => {
    await start();
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${plainToken("weak", PASSWORD)}`);
    expect(reply.code).toBe(534);
    expect(reply.enhanced).toBe("5.7.9");
    expect(reply.lines).toEqual(["5.7.9 Authentication mechanism is too weak"]);
  });

  test("cancelled exchange gets 501", async () => {
    await start();
    const client = await connectSecure();
    expect((await client.command("AUTH LOGIN")).code).toBe(334);
    const reply = await client.command("*");
    expect(reply.code).toBe(501);
    expect(reply.enhanced).toMatch(/^5\./);
    expect(await client.command("NOOP")).toMatchObject({ code: 250 });
  });

  test("invalid PLAIN token gets 501", async () => {
    await start();
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${base64("no separators")}`);
    expect(reply.code).toBe(501);
    expect(reply.enhanced).toMatch(/^5\./);
  });

  test("unknown mechanism gets 504", async () => {
    await start();
    const client = await connectSecure();
    const reply = await client.command("AUTH CRAM-MD5");
    expect(reply.code).toBe(504);
    expect(reply.enhanced).toBe("5.5.4");
  });

  test("AUTH before EHLO gets 503", async () => {
    await start({ allowInsecureAuth: true });
    const client = await connect();
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(reply.code).toBe(503);
    expect(reply.enhanced).toBe("5.5.1");
  });

  test("AUTH after HELO gets 503", async () => {
    await start({ allowInsecureAuth: true });
    const client = await connect();
    expect((await client.command("HELO client.example")).code).toBe(250);
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(reply.code).toBe(503);
    expect(reply.enhanced).toBe("5.5.1");
    const mail = await client.command("MAIL FROM:<alice@sender.example>");
    expect(mail.code).toBe(250);
    await client.command("RCPT TO:<bob@example.test>");
    await client.command("DATA");
    await client.command("Subject: hi\r\n\r\nbody\r\n.");
    const [envelope] = await readEnvelopes(dir);
    expect(envelope!.user).toBeNull();
  });

  test("AUTH inside a transaction gets 503", async () => {
    await start();
    const client = await connectSecure();
    await client.command("MAIL FROM:<alice@sender.example>");
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(reply.code).toBe(503);
    expect(reply.enhanced).toBe("5.5.1");
  });

  test("second AUTH after success gets 503", async () => {
    await start();
    const client = await connectSecure();
    await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines.some((line) => line.startsWith("AUTH"))).toBe(false);
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    expect(reply.code).toBe(503);
    expect(reply.enhanced).toBe("5.5.1");
  });
});

describe("AUTH and maxErrors", () => {
  /** Command lines of one AUTH exchange that ends in a 501 from the SASL code, with the reply code each gets. */
  const REJECTED_EXCHANGES: [string, [string, number][]][] = [
    ["LOGIN cancelled at the user name", [["AUTH LOGIN", 334], ["*", 501]]],
    ["LOGIN cancelled at the password", [[`AUTH LOGIN ${base64("alice")}`, 334], ["*", 501]]],
    ["PLAIN cancelled after an empty challenge", [["AUTH PLAIN", 334], ["*", 501]]],
    ["PLAIN with a zero-length initial response", [["AUTH PLAIN =", 501]]],
  ];

  test.each(REJECTED_EXCHANGES)("%s counts as an error", async (_name, steps) => {
    await start({ maxErrors: 3 });
    const client = await connectSecure();
    for (let round = 1; round <= 3; round++) {
      for (const [line, code] of steps) {
        const reply = await client.command(line);
        expect({ round, line, code: reply.code }).toEqual({ round, line, code });
      }
    }
    const closing = await client.read();
    expect(closing.code).toBe(421);
    expect(closing.enhanced).toBe("4.7.0");
    await client.closed();
  });

  test("cancelled AUTH shares the count with other errors", async () => {
    await start({ maxErrors: 2 });
    const client = await connectSecure();
    expect((await client.command("BOGUS")).code).toBe(500);
    expect((await client.command("AUTH LOGIN")).code).toBe(334);
    expect((await client.command("*")).code).toBe(501);
    expect((await client.read()).code).toBe(421);
    await client.closed();
  });

  test("rejected credentials do not count as errors", async () => {
    // Rejections by the auth hook are limited by the auth plugin (plugin-auth-file's maxFailures).
    await start({ maxErrors: 2 });
    const client = await connectSecure();
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", "wrong")}`)).code).toBe(535);
    expect((await client.command(`AUTH LOGIN ${base64("mallory")}`)).code).toBe(334);
    expect((await client.command(base64("guess"))).code).toBe(535);
    expect((await client.command(`AUTH PLAIN ${plainToken("weak", PASSWORD)}`)).code).toBe(534);
    expect((await client.command("NOOP")).code).toBe(250);
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`)).code).toBe(235);
  });
});

describe("authenticated user", () => {
  test("later hooks see connection.user", async () => {
    await start();
    const client = await connectSecure();
    await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    const replies = await client.send({ from: "alice@sender.example", to: ["bob@local.example"], message: "Subject: hi\r\n\r\nbody\r\n" });
    expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250, 250]);

    const [envelope] = await readEnvelopes(dir);
    expect(envelope!.user).toBe("alice");
    expect(envelope!.notes).toMatchObject({ userAtMail: "alice", userAtRcpt: "alice", userAtDataPost: "alice" });
  });

  test("failed AUTH leaves the connection anonymous", async () => {
    await start();
    const client = await connectSecure();
    await client.command(`AUTH PLAIN ${plainToken("alice", "wrong")}`);
    await client.send({ from: "alice@sender.example", to: ["bob@local.example"], message: "Subject: hi\r\n\r\nbody\r\n" });

    const [envelope] = await readEnvelopes(dir);
    expect(envelope!.user).toBeNull();
  });
});

describe("MAIL AUTH parameter", () => {
  test.each([
    ["empty submitter", "AUTH=<>"],
    ["xtext mailbox", "AUTH=alice+40sender.example"],
  ])("%s is accepted after login", async (_name, parameter) => {
    await start();
    const client = await connectSecure();
    await client.command(`AUTH PLAIN ${plainToken("alice", PASSWORD)}`);
    const reply = await client.command(`MAIL FROM:<alice@sender.example> ${parameter}`);
    expect(reply.code).toBe(250);
  });

  test("AUTH=<> is accepted where AUTH is offered", async () => {
    await start();
    const client = await connectSecure();
    expect((await client.command("MAIL FROM:<relay@sender.example> AUTH=<>")).code).toBe(250);
  });

  test("invalid xtext gets 501", async () => {
    await start();
    const client = await connectSecure();
    const reply = await client.command("MAIL FROM:<alice@sender.example> AUTH=a=b");
    expect(reply.code).toBe(501);
    expect(reply.enhanced).toBe("5.5.4");
    const empty = await client.command("MAIL FROM:<alice@sender.example> AUTH");
    expect(empty.code).toBe(501);
  });

  test("AUTH parameter without AUTH offered gets 555", async () => {
    await start({ authPlugin: false });
    const client = await connectSecure();
    const reply = await client.command("MAIL FROM:<alice@sender.example> AUTH=<>");
    expect(reply.code).toBe(555);
    expect(reply.enhanced).toBe("5.5.4");
  });
});

test("passwords never reach the log", async () => {
  const logLines: string[] = [];
  await start({ logLines });
  const secrets = ["correct horse", "wrong-secret-1", "wrong-secret-2", "boom-secret-3"];
  const client = await connectSecure();
  await client.command(`AUTH PLAIN ${plainToken("alice", "wrong-secret-1")}`);
  await client.command("AUTH LOGIN");
  await client.command(base64("alice"));
  await client.command(base64("wrong-secret-2"));
  await client.command(`AUTH PLAIN ${plainToken("boom", "boom-secret-3")}`);
  await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`);
  await client.command("QUIT");
  await client.closed();
  // The connection-closed line is written after the socket closed.
  await new Promise((resolve) => setTimeout(resolve, 100));

  const log = logLines.join("");
  expect(log).toContain("authenticated");
  expect(log).toContain("authentication failed");
  for (const secret of secrets) {
    expect(log, secret).not.toContain(secret);
    expect(log, secret).not.toContain(base64(secret));
  }
  expect(log).not.toContain(plainToken("alice", "correct horse"));
});
