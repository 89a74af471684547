import net from "node:net";
import { captureLogs, SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, expect, test } from "vitest";
import { SINK_PLUGIN } from "./fixtures/paths.js";

const REJECTED = "PROXY header missing or invalid; connection closed";

let server: TestServer | undefined;
let logs: Record<string, unknown>[];
const clients: SmtpTestClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server?.stop();
  server = undefined;
});

/** Starts a server that expects a PROXY header from 127.0.0.1 and records its log lines. */
async function start(serverOptions: Record<string, unknown> = {}): Promise<TestServer> {
  const capture = captureLogs("info");
  logs = capture.records;
  server = await startTestServer(
    { server: { hostname: "mx.test", proxyProtocol: ["127.0.0.1"], ...serverOptions }, plugins: [{ use: SINK_PLUGIN }] },
    { logger: capture.logger },
  );
  return server;
}

async function connect(target: TestServer, proxyHeader?: string): Promise<SmtpTestClient> {
  const client = await target.connect(proxyHeader === undefined ? {} : { proxyHeader });
  clients.push(client);
  return client;
}

function opened(): Record<string, unknown>[] {
  return logs.filter((line) => line.msg === "connection opened");
}

test("valid header attributes the session to the client", async () => {
  const target = await start();
  const client = await connect(target, "PROXY TCP4 198.51.100.7 127.0.0.1 5555 25\r\n");
  expect(client.greeting.raw).toBe("220 mx.test ESMTP");
  expect((await client.command("EHLO client.test")).code).toBe(250);
  expect(opened().map((line) => [line.remote, line.port])).toEqual([["198.51.100.7", 5555]]);
});

test("commands in the header's packet reach the session", async () => {
  const target = await start();
  const client = await connect(target, "PROXY TCP6 2001:db8::7 ::1 5555 25\r\nEHLO client.test\r\n");
  expect(client.greeting.code).toBe(220);
  expect((await client.read()).code).toBe(250);
  expect(opened()[0]?.remote).toBe("2001:db8::7");
});

test.each([
  ["a header without addresses", "PROXY garbage\r\n", "unknown protocol"],
  ["PROXY UNKNOWN", "PROXY UNKNOWN\r\n", "names no client address"],
  ["an SMTP command instead of a header", "EHLO client.test\r\n", "does not start with PROXY"],
  ["a header ending in a bare LF", "PROXY TCP4 198.51.100.7 127.0.0.1 5555 25\n", "does not end in CRLF"],
  ["a version 2 header", "\r\n\r\n\0\r\nQUIT\n!\x11\0\x0c", "version 2 is not supported"],
  ["a line past 107 octets", `PROXY TCP4 ${"1".repeat(120)}`, "no line end within 107 octets"],
])("%s gets 421 4.7.0 and no session", async (_name, header, reason) => {
  const target = await start();
  const client = await connect(target, header);
  expect(client.greeting.code).toBe(421);
  expect(client.greeting.enhanced).toBe("4.7.0");
  await client.closed();
  expect(opened()).toEqual([]);
  const rejected = logs.filter((line) => line.msg === REJECTED);
  expect(rejected).toHaveLength(1);
  expect(rejected[0]!.level).toBe(40);
  expect(rejected[0]!.proxy).toBe("127.0.0.1");
  expect(String(rejected[0]!.reason)).toContain(reason);
});

test("a peer that sends no header gets 421 4.4.2", async () => {
  const target = await start({ limits: { idleTimeout: 400 } });
  const started = Date.now();
  const client = await connect(target);
  expect(client.greeting.code).toBe(421);
  expect(client.greeting.enhanced).toBe("4.4.2");
  expect(Date.now() - started).toBeGreaterThanOrEqual(350);
  await client.closed();
  expect(opened()).toEqual([]);
  expect(logs.find((line) => line.msg === REJECTED)?.reason).toBe("no PROXY header within 400 ms");
});

test("an incomplete header at the timeout gets 421 4.4.2", async () => {
  const target = await start({ limits: { idleTimeout: 400 } });
  const started = Date.now();
  const client = await connect(target, "PROXY TCP4 198.51.100.7");
  expect(client.greeting.code).toBe(421);
  expect(client.greeting.enhanced).toBe("4.4.2");
  expect(Date.now() - started).toBeGreaterThanOrEqual(350);
  await client.closed();
  expect(opened()).toEqual([]);
  const rejected = logs.filter((line) => line.msg === REJECTED);
  expect(rejected).toHaveLength(1);
  expect(rejected[0]!.level).toBe(40);
  expect(rejected[0]!.reason).toBe("the header was incomplete after 400 ms");
  expect(rejected[0]!.received).toBe("PROXY TCP4 198.51.100.7");
});

test("a peer that hangs up before a header is logged at debug only", async () => {
  const target = await start();
  const socket = net.connect(target.port, target.host);
  await new Promise((resolve) => socket.once("connect", resolve));
  socket.end("PROXY TCP4");
  await new Promise((resolve) => socket.once("close", resolve));
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(logs.filter((line) => line.msg === REJECTED)).toEqual([]);
  expect(opened()).toEqual([]);
});

test("a peer outside the list needs no header", async () => {
  const target = await start({ proxyProtocol: ["192.0.2.1"] });
  const client = await connect(target);
  expect(client.greeting.code).toBe(220);
  expect(opened()[0]?.remote).toBe("127.0.0.1");
});
