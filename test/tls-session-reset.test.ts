import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { plainToken, readEnvelopes, writeFixedAuthPlugin, writeSinkPlugin } from "./auth-helpers.js";
import { makeCertificate, startTls, type TestCertificate } from "./tls-helpers.js";

let certificate: TestCertificate;
let certs: string;

beforeAll(async () => {
  certs = await mkdtemp(path.join(os.tmpdir(), "mailroom-tls-reset-certs-"));
  certificate = await makeCertificate(certs, "mx", "mx.test");
});

afterAll(async () => {
  await rm(certs, { recursive: true, force: true });
});

let server: TestServer | undefined;
let client: SmtpTestClient | undefined;
afterEach(async () => {
  client?.close();
  client = undefined;
  await server?.stop();
  server = undefined;
});

async function start(options: { allowInsecureAuth?: boolean } = {}): Promise<TestServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-tls-reset-"));
  await mkdir(dir, { recursive: true });
  const sink = await writeSinkPlugin(dir);
  const auth = await writeFixedAuthPlugin(dir);
  const started = await startTestServer(
    {
      server: {
        hostname: "mx.test",
        tls: { key: certificate.keyPath, cert: certificate.certPath },
        allowInsecureAuth: options.allowInsecureAuth ?? false,
      },
      plugins: [{ use: auth }, { use: sink }],
    },
    { dir },
  );
  const stop = started.stop;
  started.stop = async () => {
    await stop();
    await rm(dir, { recursive: true, force: true });
  };
  server = started;
  return started;
}

async function connect(): Promise<SmtpTestClient> {
  client = await server!.connect();
  return client;
}

/** Completes the TLS handshake after the client has written STARTTLS itself. */
async function handshake(connection: SmtpTestClient): Promise<void> {
  const ready = await connection.read();
  expect(ready.code).toBe(220);
  await connection.upgrade({ servername: "mx.test", ca: certificate.pem });
}

function isEhloReply(lines: string[]): boolean {
  return lines[0] === "mx.test Hello client.example";
}

describe("plaintext pipelined behind STARTTLS", () => {
  test("command in the same write gets no reply", async () => {
    await start();
    const connection = await connect();
    await connection.command("EHLO client.example");
    connection.write("STARTTLS\r\nRSET\r\n");
    await handshake(connection);

    const ehlo = await connection.command("EHLO client.example");
    expect(ehlo.code).toBe(250);
    expect(isEhloReply(ehlo.lines)).toBe(true);
    expect(await connection.silentFor(200)).toBe(true);
  });

  test("hundreds of pipelined commands all get no reply", async () => {
    await start();
    const connection = await connect();
    await connection.command("EHLO client.example");
    connection.write(`STARTTLS\r\n${"RSET\r\n".repeat(500)}`);
    await handshake(connection);

    const ehlo = await connection.command("EHLO client.example");
    expect(isEhloReply(ehlo.lines)).toBe(true);
    const noop = await connection.command("NOOP");
    expect(noop.code).toBe(250);
    expect(noop.enhanced).toBe("2.0.0");
    expect(await connection.silentFor(200)).toBe(true);
  });

  test("unterminated command never joins the first TLS line", async () => {
    const { dir } = await start();
    const connection = await connect();
    await connection.command("EHLO client.example");
    connection.write("STARTTLS\r\nMAIL FROM:<attacker@evil.example> X=");
    await handshake(connection);

    const ehlo = await connection.command("EHLO client.example");
    expect(ehlo.code).toBe(250);
    expect(isEhloReply(ehlo.lines)).toBe(true);
    expect(await connection.command("MAIL FROM:<owner@sender.example>")).toMatchObject({ code: 250 });
    expect(await connection.command("RCPT TO:<rcpt@local.example>")).toMatchObject({ code: 250 });
    const stored = await connection.data("Subject: hi\r\n\r\nbody\r\n");
    expect(stored.code).toBe(250);

    const envelopes = await readEnvelopes(dir);
    expect(envelopes).toHaveLength(1);
    expect(envelopes[0]!.sender).toBe("owner@sender.example");
    expect(JSON.stringify(envelopes)).not.toContain("attacker@evil.example");
  });
});

describe("session state after the TLS handshake", () => {
  test("MAIL without a new EHLO gets 503", async () => {
    await start();
    const connection = await connect();
    await startTls(connection, { servername: "mx.test", certificate });

    const mail = await connection.command("MAIL FROM:<owner@sender.example>");
    expect(mail.code).toBe(503);
    expect(mail.enhanced).toBe("5.5.1");
  });

  test("new EHLO reply omits STARTTLS", async () => {
    await start();
    const connection = await connect();
    const before = await connection.command("EHLO client.example");
    expect(before.lines).toContain("STARTTLS");
    await startTls(connection, { servername: "mx.test", certificate, ehlo: false });

    const after = await connection.command("EHLO client.example");
    expect(after.code).toBe(250);
    expect(after.lines).not.toContain("STARTTLS");
    expect(await connection.command("MAIL FROM:<owner@sender.example>")).toMatchObject({ code: 250 });
  });

  test("transaction opened before STARTTLS is gone", async () => {
    await start();
    const connection = await connect();
    await connection.command("EHLO client.example");
    expect(await connection.command("MAIL FROM:<early@sender.example>")).toMatchObject({ code: 250 });
    await startTls(connection, { servername: "mx.test", certificate, ehlo: false });
    await connection.command("EHLO client.example");

    const rcpt = await connection.command("RCPT TO:<rcpt@local.example>");
    expect(rcpt.code).toBe(503);
    expect(rcpt.enhanced).toBe("5.5.1");
  });

  test("authentication before STARTTLS is forgotten", async () => {
    const { dir } = await start({ allowInsecureAuth: true });
    const connection = await connect();
    await connection.command("EHLO client.example");
    const auth = await connection.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`);
    expect(auth.code).toBe(235);
    await startTls(connection, { servername: "mx.test", certificate, ehlo: false });

    const ehlo = await connection.command("EHLO client.example");
    expect(ehlo.lines).toContain("AUTH PLAIN LOGIN");
    await connection.command("MAIL FROM:<owner@sender.example>");
    await connection.command("RCPT TO:<rcpt@local.example>");
    expect((await connection.data("Subject: hi\r\n\r\nbody\r\n")).code).toBe(250);

    const [envelope] = await readEnvelopes(dir);
    expect(envelope!.user).toBeNull();
  });
});
