import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { makeCertificate } from "./tls-helpers.js";

// Few slots and a long idle timeout: a slot that a vanished client leaks
// stays taken for the whole test.
const SLOTS = 4;

let dir: string;
let server: TestServer;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-tls-vanish-"));
  const certificate = await makeCertificate(dir, "server", "mx.vanish.test");
  server = await startTestServer(
    {
      server: {
        hostname: "mx.vanish.test",
        tls: { key: certificate.keyPath, cert: certificate.certPath },
        limits: { maxConnections: SLOTS, maxConnectionsPerIp: SLOTS, idleTimeout: "60s" },
      },
    },
    { dir },
  );
});

afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/**
 * Connects and waits for the greeting. The probes of the previous round may
 * still hold their slots for a moment, so a 421 greeting is retried.
 */
async function connectForStartTls() {
  for (let attempt = 0; ; attempt++) {
    const raw = net.connect(server.port, "127.0.0.1");
    raw.on("error", () => undefined);
    let received = "";
    const onText = (chunk: Buffer) => (received += chunk.toString("latin1"));
    raw.on("data", onText);
    for (let waited = 0; !/\r\n/.test(received) && waited < 5000; waited += 5) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    if (received.startsWith("220 ") || attempt >= 20) return { raw, text: () => received, onText };
    raw.destroy();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Sends STARTTLS, starts the handshake and closes the socket `ms` later. */
async function leaveDuringHandshake(ms: number): Promise<void> {
  const { raw, text, onText } = await connectForStartTls();
  raw.write("EHLO vanish.test\r\nSTARTTLS\r\n");
  for (let waited = 0; !/^220 2\.0\.0/m.test(text()) && waited < 5000; waited += 5) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  expect(text()).toMatch(/^220 2\.0\.0/m);
  raw.off("data", onText);
  const secure = tls.connect({ socket: raw, rejectUnauthorized: false });
  secure.on("error", () => undefined);
  await new Promise((resolve) => setTimeout(resolve, ms));
  // destroy() sends FIN, so the server socket ends rather than resets.
  raw.destroy();
  secure.destroy();
}

async function greetingsOfAllSlots(): Promise<number[]> {
  const clients = await Promise.all(Array.from({ length: SLOTS }, () => SmtpTestClient.connect(server.port)));
  const codes = clients.map((client) => client.greeting.code);
  for (const client of clients) client.close();
  await Promise.all(clients.map((client) => client.closed()));
  return codes;
}

/** Waits up to two seconds, far below the idle timeout, for every slot to greet with 220. */
async function expectAllSlotsFree(): Promise<void> {
  let codes: number[] = [];
  for (let attempt = 0; attempt < 20; attempt++) {
    codes = await greetingsOfAllSlots();
    if (codes.every((code) => code === 220)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  expect(codes).toEqual(Array.from({ length: SLOTS }, () => 220));
}

test("client leaving mid-handshake frees its slot", async () => {
  for (let round = 0; round < 12; round++) {
    await Promise.all(Array.from({ length: SLOTS }, (_, index) => leaveDuringHandshake((round + index) % 5)));
    await expectAllSlotsFree();
  }
});
