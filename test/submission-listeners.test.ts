import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import type { BoundAddress } from "@mailroom/core";
import { captureLogs, SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { plainToken, readEnvelopes, writeFixedAuthPlugin, writeSinkPlugin } from "./auth-helpers.js";
import { makeCertificate, startTls, type TestCertificate } from "./tls-helpers.js";

const MESSAGE = "Subject: hi\r\n\r\nbody\r\n";

let certs: string;
let main: TestCertificate;
let alpha: TestCertificate;

beforeAll(async () => {
  certs = await mkdtemp(path.join(os.tmpdir(), "mailroom-submission-certs-"));
  [main, alpha] = await Promise.all([
    makeCertificate(certs, "main", "mx.test"),
    makeCertificate(certs, "alpha", "alpha.example"),
  ]);
});

afterAll(async () => {
  await rm(certs, { recursive: true, force: true });
});

let dir: string;
let server: TestServer | undefined;
const clients: SmtpTestClient[] = [];
/** The relay (port 25 style), submission (587 style) and implicit TLS (465 style) listeners. */
let relay: BoundAddress;
let submission: BoundAddress;
let implicit: BoundAddress;

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server?.stop();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function start(): Promise<void> {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-submission-"));
  server = await startTestServer(
    {
      server: {
        hostname: "mx.test",
        listen: [
          "127.0.0.1:0",
          { address: "127.0.0.1:0", requireAuth: true },
          { address: "127.0.0.1:0", implicitTls: true, requireAuth: true },
        ],
        tls: {
          key: main.keyPath,
          cert: main.certPath,
          sni: { "alpha.example": { key: alpha.keyPath, cert: alpha.certPath } },
        },
      },
      plugins: [{ use: await writeFixedAuthPlugin(dir) }, { use: await writeSinkPlugin(dir) }],
    },
    { dir },
  );
  [relay, submission, implicit] = server.addresses as [BoundAddress, BoundAddress, BoundAddress];
}

async function connect(address: BoundAddress): Promise<SmtpTestClient> {
  const client = await SmtpTestClient.connect(address.port, address.host, { implicitTls: address.implicitTls });
  clients.push(client);
  return client;
}

test("one server binds every listener", async () => {
  await start();
  expect(server!.addresses).toHaveLength(3);
  const ports = new Set(server!.addresses.map((address) => address.port));
  expect(ports.size).toBe(3);
  expect(server!.addresses.map((address) => address.implicitTls)).toEqual([false, false, true]);
});

describe("submission listener", () => {
  test("MAIL before AUTH gets 530", async () => {
    await start();
    const client = await connect(submission);
    await client.command("EHLO client.example");
    const plain = await client.command("MAIL FROM:<alice@sender.example>");
    expect(plain).toMatchObject({ code: 530, enhanced: "5.7.0" });

    await startTls(client, { servername: "mx.test", certificate: main, ehlo: false });
    await client.command("EHLO client.example");
    const secure = await client.command("MAIL FROM:<alice@sender.example>");
    expect(secure).toMatchObject({ code: 530, enhanced: "5.7.0" });
  });

  test("VRFY and EXPN before AUTH get 530", async () => {
    await start();
    const client = await connect(submission);
    await startTls(client, { servername: "mx.test", certificate: main });
    await client.command("EHLO client.example");
    expect(await client.command("VRFY alice")).toMatchObject({ code: 530, enhanced: "5.7.0" });
    expect(await client.command("EXPN staff")).toMatchObject({ code: 530, enhanced: "5.7.0" });
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`)).code).toBe(235);
    expect((await client.command("VRFY alice")).code).not.toBe(530);

    const open = await connect(relay);
    await open.command("EHLO client.example");
    expect((await open.command("VRFY alice")).code).not.toBe(530);
  });

  test("AUTH is offered only after STARTTLS", async () => {
    await start();
    const client = await connect(submission);
    const plain = await client.command("EHLO client.example");
    expect(plain.lines).toContain("STARTTLS");
    expect(plain.lines).not.toContain("AUTH PLAIN LOGIN");
    await startTls(client, { servername: "mx.test", certificate: main, ehlo: false });
    const secure = await client.command("EHLO client.example");
    expect(secure.lines).toContain("AUTH PLAIN LOGIN");
  });

  test("failed AUTH still gets 530 at MAIL", async () => {
    await start();
    const client = await connect(submission);
    await startTls(client, { servername: "mx.test", certificate: main });
    await client.command("EHLO client.example");
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", "wrong")}`)).code).toBe(535);
    expect((await client.command("MAIL FROM:<alice@sender.example>")).code).toBe(530);
  });

  test("authenticated client submits a message", async () => {
    await start();
    const client = await connect(submission);
    await startTls(client, { servername: "mx.test", certificate: main });
    await client.command("EHLO client.example");
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`)).code).toBe(235);
    const replies = await client.send({ from: "alice@sender.example", to: ["bob@remote.example"], message: MESSAGE });
    expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250, 250]);

    const [envelope] = await readEnvelopes(dir);
    expect(envelope!.user).toBe("alice");
    expect(envelope!.tls.secure).toBe(true);
  });
});

describe("implicit TLS listener", () => {
  test("greeting arrives inside TLS", async () => {
    await start();
    const socket = tls.connect({ port: implicit.port, host: implicit.host, servername: "mx.test", ca: main.pem });
    const greeting = await new Promise<string>((resolve, reject) => {
      socket.once("data", (chunk: Buffer) => resolve(chunk.toString("utf8")));
      socket.once("error", reject);
    });
    expect(greeting).toMatch(/^220 mx\.test ESMTP\r\n$/);
    expect(socket.getPeerCertificate().fingerprint256).toBe(main.fingerprint);
    socket.destroy();
  });

  test("SNI picks the certificate before the greeting", async () => {
    await start();
    const socket = tls.connect({ port: implicit.port, host: implicit.host, servername: "alpha.example", ca: alpha.pem });
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", resolve);
      socket.once("error", reject);
    });
    expect(socket.getPeerCertificate().fingerprint256).toBe(alpha.fingerprint);
    socket.destroy();
  });

  test("plaintext client gets no greeting", async () => {
    await start();
    const socket = net.connect({ port: implicit.port, host: implicit.host });
    const received: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => received.push(chunk));
    socket.on("error", () => {});
    socket.write("EHLO client.example\r\n");
    await new Promise<void>((resolve) => {
      socket.once("close", () => resolve());
      setTimeout(resolve, 1000);
    });
    socket.destroy();
    expect(Buffer.concat(received).toString("latin1")).not.toMatch(/^220 /);
  });

  test("EHLO offers AUTH and not STARTTLS", async () => {
    await start();
    const client = await connect(implicit);
    expect(client.greeting.code).toBe(220);
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines).toContain("AUTH PLAIN LOGIN");
    expect(ehlo.lines).not.toContain("STARTTLS");
    expect(await client.command("STARTTLS")).toMatchObject({ code: 503, enhanced: "5.5.1" });
  });

  test("MAIL before AUTH gets 530", async () => {
    await start();
    const client = await connect(implicit);
    await client.command("EHLO client.example");
    expect(await client.command("MAIL FROM:<alice@sender.example>")).toMatchObject({ code: 530, enhanced: "5.7.0" });
  });

  test("authenticated client submits a message", async () => {
    await start();
    const client = await connect(implicit);
    await client.command("EHLO client.example");
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`)).code).toBe(235);
    const replies = await client.send({ from: "alice@sender.example", to: ["bob@remote.example"], message: MESSAGE });
    expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250, 250]);

    const [envelope] = await readEnvelopes(dir);
    expect(envelope!.user).toBe("alice");
    expect(envelope!.tls.secure).toBe(true);
    expect(envelope!.tls.protocol).toMatch(/^TLSv1\.[23]$/);
    expect(envelope!.tls.cipher).toBeTruthy();
  });
});

describe("relay listener beside them", () => {
  test("MAIL needs no AUTH", async () => {
    await start();
    const client = await connect(relay);
    const replies = await client.send({ from: "someone@sender.example", to: ["bob@local.example"], message: MESSAGE });
    expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250, 250]);
    const [envelope] = await readEnvelopes(dir);
    expect(envelope!.user).toBeNull();
    expect(envelope!.tls.secure).toBe(false);
  });
});

test("requireAuth without an auth plugin logs a warning", async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-submission-"));
  const { logger, lines } = captureLogs("warn");
  server = await startTestServer({ server: { listen: [{ address: "127.0.0.1:0", requireAuth: true }] } }, { dir, logger });
  expect(lines.join("")).toContain("listener requires AUTH but no plugin handles the auth hook");
});

describe("requireAuth listener without TLS", () => {
  const WARNING = "listener requires AUTH but offers it only over TLS, and server.tls is not configured for STARTTLS";

  /** Starts one requireAuth listener with an auth plugin and no certificate; returns the log lines. */
  async function startWithoutTls(serverOptions: Record<string, unknown> = {}): Promise<Record<string, unknown>[]> {
    dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-submission-"));
    const { logger, records } = captureLogs("warn");
    server = await startTestServer(
      {
        server: { listen: [{ address: "127.0.0.1:0", requireAuth: true }], ...serverOptions },
        plugins: [{ use: await writeFixedAuthPlugin(dir) }, { use: await writeSinkPlugin(dir) }],
      },
      { dir, logger },
    );
    return records;
  }

  test("logs a warning at startup", async () => {
    const logs = await startWithoutTls();
    const warnings = logs.filter((line) => String(line.msg).startsWith(WARNING));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.level).toBe(40);
    expect(warnings[0]!.address).toBe("127.0.0.1:0");
  });

  test("rejects AUTH with 538 and MAIL with 530", async () => {
    await startWithoutTls();
    const client = await connect(server!.addresses[0]!);
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines).not.toContain("STARTTLS");
    expect(ehlo.lines).not.toContain("AUTH PLAIN LOGIN");
    expect(await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`)).toMatchObject({ code: 538, enhanced: "5.7.11" });
    expect(await client.command("MAIL FROM:<alice@sender.example>")).toMatchObject({ code: 530, enhanced: "5.7.0" });
  });

  test("logs no warning with allowInsecureAuth", async () => {
    const logs = await startWithoutTls({ allowInsecureAuth: true });
    expect(logs.filter((line) => String(line.msg).startsWith(WARNING))).toEqual([]);
    const client = await connect(server!.addresses[0]!);
    await client.command("EHLO client.example");
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`)).code).toBe(235);
  });
});

test("implicitTls without a certificate stops startup", async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-submission-"));
  await expect(
    startTestServer({ server: { listen: [{ address: "127.0.0.1:0", implicitTls: true }] } }, { dir }),
  ).rejects.toThrow(/implicitTls but server\.tls is not configured/);
});
