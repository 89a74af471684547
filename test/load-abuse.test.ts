// Hostile connection patterns: connect/close storms, clients that vanish in
// the middle of a TLS handshake, and pipelined bursts larger than the socket
// buffers. After each, the server serves normally and has no leaked slots.
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { report, scale, sleep, until } from "./fault-kit.js";
import { makeCertificate } from "./tls-helpers.js";

const SLOTS = 60;
const MB = 1024 * 1024;

let dir: string;
let server: TestServer;
let tlsPort: number;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-abuse-"));
  const certificate = await makeCertificate(dir, "server", "mx.abuse.test");
  server = await startTestServer(
    {
      server: {
        hostname: "mx.abuse.test",
        listen: ["127.0.0.1:0", { address: "127.0.0.1:0", implicitTls: true }],
        tls: { key: certificate.keyPath, cert: certificate.certPath },
        limits: { maxConnections: SLOTS, maxConnectionsPerIp: SLOTS, idleTimeout: "10s" },
      },
    },
    { dir },
  );
  tlsPort = server.addresses.find((address) => address.implicitTls)!.port;
});

afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/**
 * Opens every slot at once and checks each gets the banner: a slot leaked by
 * an earlier abuser would show as a 421. Retried while closes are in flight.
 */
async function expectAllSlotsFree(): Promise<void> {
  await until(
    async () => {
      const clients = await Promise.all(Array.from({ length: SLOTS }, () => SmtpTestClient.connect(server.port)));
      const codes = clients.map((client) => client.greeting.code);
      const noop = await clients[SLOTS - 1]!.command("NOOP").catch(() => undefined);
      for (const client of clients) client.close();
      const free = codes.every((code) => code === 220) && noop?.code === 250;
      if (!free) await sleep(200);
      return free;
    },
    "every connection slot to be free again",
    15_000,
  );
}

/** Opens one abusive connection that ends at an early moment chosen by `kind`. */
function storm(kind: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(server.port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.on("close", () => resolve());
    if (kind === 0) socket.once("connect", () => socket.destroy());
    else if (kind === 1) socket.once("data", () => socket.destroy());
    else if (kind === 2) socket.once("connect", () => socket.resetAndDestroy());
    else {
      socket.once("data", () => {
        socket.write("EHLO storm.test\r\nMAIL FROM:<a@storm.test>\r\nRCPT TO:<b@storm.test>\r\nDATA\r\nhalf");
        setTimeout(() => socket.destroy(), 5);
      });
    }
    setTimeout(() => socket.destroy(), 5000).unref();
  });
}

test("connect/close storm leaks no slot", async () => {
  const total = scale(400, 5000);
  const rssBefore = process.memoryUsage().rss;
  for (let start = 0; start < total; start += 40) {
    await Promise.all(Array.from({ length: 40 }, (_, index) => storm((start + index) % 4)));
  }
  await expectAllSlotsFree();
  report("connect/close storm", {
    load: `${total} connections, 40 at a time`,
    faults: "close right after connect, close after the banner, TCP reset, close in the middle of DATA",
    inputs: `${total} abusive connections, then all ${SLOTS} slots opened at once`,
    rss: `test process RSS (server in process) ${(rssBefore / MB).toFixed(1)} MB before, ${(process.memoryUsage().rss / MB).toFixed(1)} MB after`,
    lost: 0,
  });
});

/** Starts a TLS handshake (STARTTLS or implicit TLS) and vanishes after `ms`. */
async function vanishingTls(implicit: boolean, ms: number): Promise<void> {
  const raw = net.connect(implicit ? tlsPort : server.port, "127.0.0.1");
  raw.on("error", () => undefined);
  await new Promise<void>((resolve) => raw.once("connect", () => resolve()));
  if (!implicit) {
    let text = "";
    const onText = (chunk: Buffer) => (text += chunk.toString("latin1"));
    raw.on("data", onText);
    raw.write("EHLO vanish.test\r\nSTARTTLS\r\n");
    await until(() => /220 2\.0\.0/.test(text) || raw.destroyed, "the STARTTLS go-ahead", 5000);
    raw.off("data", onText);
  }
  const secure = tls.connect({ socket: raw, rejectUnauthorized: false });
  secure.on("error", () => undefined);
  await sleep(ms);
  raw.destroy();
  secure.destroy();
}

test("vanishing TLS clients leak no slot", async () => {
  const total = scale(60, 600);
  for (let start = 0; start < total; start += 20) {
    await Promise.all(Array.from({ length: 20 }, (_, index) => vanishingTls((start + index) % 2 === 0, index % 5)));
  }
  // A full STARTTLS handshake and an implicit TLS session still work.
  const client = await server.connect();
  await client.command("EHLO client.test");
  expect((await client.command("STARTTLS")).code).toBe(220);
  await client.upgrade({ servername: "mx.abuse.test" });
  expect((await client.command("EHLO client.test")).code).toBe(250);
  client.close();
  const implicit = await SmtpTestClient.connect(tlsPort, "127.0.0.1", { implicitTls: true });
  expect(implicit.greeting.code).toBe(220);
  expect((await implicit.command("NOOP")).code).toBe(250);
  implicit.close();
  await expectAllSlotsFree();
  report("clients that vanish mid-TLS-handshake", {
    load: `${total} TLS clients, 20 at a time, half on STARTTLS and half on implicit TLS`,
    faults: "the client closes 0 to 4 ms into the handshake",
    inputs: `${total} broken handshakes, then one full STARTTLS and one implicit TLS session`,
    lost: 0,
  });
});

test("oversized pipelined burst gets every reply", async () => {
  const size = scale(2, 8) * MB;
  const count = Math.floor(size / "NOOP\r\n".length);
  // The slots of the previous test may still be closing: wait for a greeting.
  const socket = await until(async () => {
    const probe = await SmtpTestClient.connect(server.port);
    probe.close();
    if (probe.greeting.code !== 220) return undefined;
    const candidate = net.connect(server.port, "127.0.0.1");
    await new Promise((resolve) => candidate.once("connect", resolve));
    return candidate;
  }, "a free slot");
  socket.on("error", () => undefined);
  let replies = 0;
  let greeted = false;
  let rest = "";
  let other = "";
  socket.setEncoding("latin1");
  const onData = (chunk: string) => {
    const text = rest + chunk;
    const lines = text.split("\r\n");
    rest = lines.pop()!;
    for (const line of lines) {
      if (!greeted && line.startsWith("220 ")) greeted = true;
      else if (line.startsWith("250 ")) replies += 1;
      else other ||= line;
    }
  };
  socket.on("data", onData);
  await until(() => greeted || other !== "", "the greeting");
  expect(other).toBe("");
  // Stop reading, then write the whole burst: both sides' buffers fill up.
  socket.pause();
  const rssBefore = process.memoryUsage().rss;
  const flushed = new Promise<void>((resolve) => socket.write("NOOP\r\n".repeat(count), () => resolve()));
  await sleep(500);
  const rssPaused = process.memoryUsage().rss;
  socket.resume();
  await flushed;
  await until(() => replies === count || other !== "", "every NOOP reply", scale(60_000, 240_000));
  expect(other).toBe("");
  expect(replies).toBe(count);
  socket.write("QUIT\r\n");
  await until(() => rest.startsWith("221") || other.startsWith("221"), "the QUIT reply").catch(() => undefined);
  socket.destroy();
  expect(rssPaused - rssBefore).toBeLessThan(300 * MB);
  report("pipelined burst larger than the socket buffers", {
    load: `${count} NOOPs (${size / MB} MiB) in one write while the client did not read`,
    faults: "a client that writes without reading",
    inputs: `${count} commands, ${replies} replies of 250 in order`,
    rss: `test process RSS (server in process) ${(rssBefore / MB).toFixed(1)} MB before, ${(rssPaused / MB).toFixed(1)} MB while blocked`,
    lost: 0,
  });
}, scale(90_000, 300_000));
