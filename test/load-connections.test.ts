// Many idle connections and slow clients against the real `mailroom start`
// process: a newcomer is still served, the timeouts close the abusers, and
// the server's memory stays bounded.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { SmtpTestClient } from "@mailroom/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { killHard, report, rssOf, scale, sleep, startCli, until, type CliServer } from "./fault-kit.js";

const IDLE = scale(200, 1000);
const SLOW = scale(10, 50);
const IDLE_TIMEOUT = scale(3000, 20_000);
const EXTRA = 20;
const MB = 1024 * 1024;

let dir: string;
let server: CliServer;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-load-"));
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(
    file,
    `server:
  hostname: mx.load.test
  listen: ["127.0.0.1:0"]
  limits:
    maxConnections: ${IDLE + SLOW + 5}
    idleTimeout: ${IDLE_TIMEOUT}
`,
  );
  server = await startCli(file);
});

afterAll(async () => {
  if (server) await killHard(server);
  await rm(dir, { recursive: true, force: true });
});

/** A raw connection that records what the server sent and when it closed. */
interface Raw {
  socket: net.Socket;
  text: string;
  closed: boolean;
}

/** Connects from `localAddress` (any address of 127.0.0.0/8) and waits for the greeting. */
function open(port: number, localAddress: string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const raw: Raw = { socket: net.connect({ port, host: "127.0.0.1", localAddress }), text: "", closed: false };
    raw.socket.setEncoding("latin1");
    raw.socket.on("data", (chunk: string) => {
      raw.text += chunk;
      if (raw.text.includes("\r\n")) resolve(raw);
    });
    raw.socket.on("error", () => undefined);
    raw.socket.on("close", () => {
      raw.closed = true;
      resolve(raw);
    });
    setTimeout(() => reject(new Error("no greeting within 20 s")), 20_000).unref();
  });
}

/** Opens `count` connections, 50 at a time, the one at `index` from `from(index)`. */
async function openMany(port: number, count: number, from: (index: number) => string): Promise<Raw[]> {
  const all: Raw[] = [];
  for (let start = 0; start < count; start += 50) {
    const batch = Array.from({ length: Math.min(50, count - start) }, (_, offset) => open(port, from(start + offset)));
    all.push(...(await Promise.all(batch)));
  }
  return all;
}

// The idle clients come from 127.1.N.1, 50 per address: the default
// maxConnectionsPerIp. Slow clients and extras each have an address of their own.
const idleAddress = (index: number) => `127.1.${Math.floor(index / 50)}.1`;
const slowAddress = (index: number) => `127.2.0.${index + 1}`;
const extraAddress = (index: number) => `127.3.0.${index + 1}`;

test("newcomer served; idle and slow clients closed", async () => {
  const pid = server.child.pid!;
  const rssStart = rssOf(pid);
  const idle = await openMany(server.port, IDLE, idleAddress);
  expect(idle.every((raw) => raw.text.startsWith("220 "))).toBe(true);

  // Slow clients: one byte a second of a command line that never ends.
  const slow = await openMany(server.port, SLOW, slowAddress);
  let bytes = 0;
  const dribble = setInterval(() => {
    for (const raw of slow) {
      if (!raw.closed) {
        raw.socket.write("N");
        bytes += 1;
      }
    }
  }, 1000);
  try {
    const rssLoaded = rssOf(pid);

    // The newcomer gets its banner and a NOOP answer while the load is on.
    const newcomer = await SmtpTestClient.connect(server.port);
    expect(newcomer.greeting.code).toBe(220);
    expect((await newcomer.command("NOOP")).code).toBe(250);

    // An address that already has 50 connections gets 421 for the next one.
    const [crowded] = await openMany(server.port, 1, () => idleAddress(0));
    expect(crowded!.text).toMatch(/^421 4\.7\.0 /);
    await until(() => crowded!.closed, "the refused connection to close");

    // maxConnections leaves four more places; past them the server replies 421 and closes.
    const extra = await openMany(server.port, EXTRA, extraAddress);
    expect(extra.filter((raw) => raw.text.startsWith("220 "))).toHaveLength(4);
    expect(extra.filter((raw) => raw.text.startsWith("421 "))).toHaveLength(EXTRA - 4);
    await until(() => extra.every((raw) => raw.closed || raw.text.startsWith("220 ")), "the refused connections to close");
    for (const raw of extra) raw.socket.destroy();
    expect((await newcomer.command("NOOP")).code).toBe(250);
    newcomer.close();

    // Every idle connection gets 421 and is closed after idleTimeout.
    await until(() => idle.every((raw) => raw.closed), "the idle connections to close", IDLE_TIMEOUT + 15_000);
    expect(idle.filter((raw) => /^421 4\.4\.2 /m.test(raw.text))).toHaveLength(IDLE);
    // The slow clients: their command line has taken longer than idleTimeout.
    await until(() => slow.every((raw) => raw.closed), "the slow clients to close", IDLE_TIMEOUT + 15_000);
    expect(slow.filter((raw) => /^421 4\.4\.2 /m.test(raw.text))).toHaveLength(SLOW);
    const rssPeak = Math.max(rssLoaded, rssOf(pid));

    // And the server still serves once the abusers are gone.
    const after = await SmtpTestClient.connect(server.port);
    expect((await after.command("NOOP")).code).toBe(250);
    after.close();
    await sleep(200);
    const rssEnd = rssOf(pid);
    expect(rssPeak - rssStart).toBeLessThan(300 * MB);
    report("idle and slow connections", {
      load: `${IDLE} idle connections from ${IDLE / 50} addresses (50 each, the per-address limit) and ${SLOW} clients sending one byte a second, idleTimeout ${IDLE_TIMEOUT} ms; ${EXTRA} more near maxConnections`,
      faults: "clients that never send a command; command lines that never end",
      inputs: `${bytes} dribbled bytes; one connection over the per-address limit and ${EXTRA - 4} over maxConnections refused with 421; the newcomer got 220 and 250`,
      rss: `server RSS ${(rssStart / MB).toFixed(1)} MB at start, ${(rssPeak / MB).toFixed(1)} MB under load, ${(rssEnd / MB).toFixed(1)} MB after`,
      lost: 0,
    });
  } finally {
    clearInterval(dribble);
    for (const raw of [...idle, ...slow]) raw.socket.destroy();
  }
}, scale(60_000, 180_000));
