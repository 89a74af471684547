import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { captureLogs, SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, beforeAll, afterAll, expect, test } from "vitest";
import { makeCertificate, type TestCertificate } from "./tls-helpers.js";

// The idle timeout is far longer than any wait below, so a socket that the
// server closes within the test was closed by a connection limit.
const IDLE_TIMEOUT = "60s";

let certs: string;
let certificate: TestCertificate;
let server: TestServer | undefined;
const sockets: net.Socket[] = [];
const clients: SmtpTestClient[] = [];

beforeAll(async () => {
  certs = await mkdtemp(path.join(os.tmpdir(), "mailroom-handshake-limits-"));
  certificate = await makeCertificate(certs, "server", "mx.limits.test");
});

afterAll(async () => {
  await rm(certs, { recursive: true, force: true });
});

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const client of clients.splice(0)) client.close();
  await server?.stop();
  server = undefined;
});

async function start(
  limits: Record<string, unknown>,
  extra: Record<string, unknown> = {},
  logger?: import("pino").Logger,
): Promise<number> {
  server = await startTestServer({
    server: {
      hostname: "mx.limits.test",
      listen: [{ address: "127.0.0.1:0", implicitTls: true }],
      tls: { key: certificate.keyPath, cert: certificate.certPath },
      limits: { idleTimeout: IDLE_TIMEOUT, ...limits },
      ...extra,
    },
  }, logger ? { logger } : {});
  return server.addresses[0]!.port;
}

/** Opens a TCP connection that never starts the TLS handshake. */
async function openSilent(port: number): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const socket = net.connect(port, "127.0.0.1");
  sockets.push(socket);
  socket.on("error", () => undefined);
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  return { socket, closed };
}

/** Resolves true when `closed` settles within `ms`, false otherwise. */
function closesWithin(closed: Promise<void>, ms: number): Promise<boolean> {
  return Promise.race([closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms))]);
}

test.each([
  ["maxConnectionsPerIp", { maxConnectionsPerIp: 2 }],
  ["maxConnections", { maxConnections: 2 }],
])("handshakes in progress count against %s", async (_name, limits) => {
  const port = await start(limits);
  const first = await openSilent(port);
  const second = await openSilent(port);
  const third = await openSilent(port);

  expect(await closesWithin(third.closed, 2000)).toBe(true);
  expect(await closesWithin(first.closed, 50)).toBe(false);
  expect(await closesWithin(second.closed, 50)).toBe(false);
});

test("pending handshake and session share the limit", async () => {
  const port = await start({ maxConnectionsPerIp: 2 });
  const session = await SmtpTestClient.connect(port, "127.0.0.1", { implicitTls: true });
  clients.push(session);
  expect(session.greeting.code).toBe(220);
  await openSilent(port);
  const over = await openSilent(port);

  expect(await closesWithin(over.closed, 2000)).toBe(true);
  expect((await session.command("NOOP")).code).toBe(250);
});

test("slot of a pending handshake is freed when it closes", async () => {
  const port = await start({ maxConnectionsPerIp: 1 });
  const silent = await openSilent(port);
  silent.socket.destroy();
  await silent.closed;

  // The server notices the close a moment later, so the client may meet the limit once or twice first.
  let greeting = 0;
  for (let attempt = 0; attempt < 20 && greeting !== 220; attempt++) {
    const client = await SmtpTestClient.connect(port, "127.0.0.1", { implicitTls: true }).catch(() => undefined);
    if (client) {
      clients.push(client);
      greeting = client.greeting.code;
    }
    if (greeting !== 220) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  expect(greeting).toBe(220);
});

test("refused handshake is logged and counted in the metrics", async () => {
  const logs = captureLogs("info");
  const port = await start({ maxConnectionsPerIp: 1 }, { metrics: { listen: "127.0.0.1:0" } }, logs.logger);
  await openSilent(port);
  const over = await openSilent(port);
  expect(await closesWithin(over.closed, 2000)).toBe(true);

  const metrics = server!.server.metricsAddress!;
  const text = await (await fetch(`http://127.0.0.1:${metrics.port}/metrics`)).text();
  expect(text).toMatch(/mailroom_connections_total\{result="refused"\} 1\b/);
  const refusals = logs.entries().filter((entry) => entry.msg === "connection refused by limit before the TLS handshake");
  expect(refusals).toHaveLength(1);
  expect(refusals[0]!.remote).toBe("127.0.0.1");
});

test("behind PROXY the header's client address counts", async () => {
  const port = await start({ maxConnectionsPerIp: 1 }, { proxyProtocol: true });
  const header = (client: string) => `PROXY TCP4 ${client} 127.0.0.1 5555 465\r\n`;
  const first = await openSilent(port);
  first.socket.write(header("198.51.100.7"));
  const other = await openSilent(port);
  other.socket.write(header("198.51.100.8"));
  const again = await openSilent(port);
  again.socket.write(header("198.51.100.7"));

  expect(await closesWithin(again.closed, 2000)).toBe(true);
  expect(await closesWithin(first.closed, 50)).toBe(false);
  expect(await closesWithin(other.closed, 50)).toBe(false);
});
