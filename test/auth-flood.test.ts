import net from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setPassword } from "@mailroom/plugin-auth-file";
import { captureLogs, SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { plainToken, writeSinkPlugin } from "./auth-helpers.js";

/** A cheap scrypt cost, for tests where the check's duration does not matter. */
const CHEAP = { N: 1024, r: 8, p: 1 };
/** A 64 MiB scrypt cost, so that one check lasts long enough for other attempts to queue behind it. */
const SLOW = { N: 2 ** 16, r: 8, p: 1 };

let dir: string;
let server: TestServer | undefined;
const clients: SmtpTestClient[] = [];
const sockets: net.Socket[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-auth-flood-"));
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const socket of sockets.splice(0)) socket.destroy();
  await server?.stop();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

interface StartOptions {
  auth?: Record<string, unknown>;
  limits?: Record<string, unknown>;
  cost?: typeof CHEAP;
  logLines?: string[];
}

async function start(options: StartOptions = {}): Promise<TestServer> {
  await setPassword(path.join(dir, "users"), "alice", "correct horse", { cost: options.cost ?? CHEAP });
  const logger = options.logLines ? captureLogs("trace", options.logLines).logger : undefined;
  server = await startTestServer(
    {
      server: { hostname: "mx.test", allowInsecureAuth: true, limits: options.limits ?? {} },
      plugins: [
        { use: "@mailroom/plugin-auth-file", with: { file: "./users", ...options.auth } },
        { use: await writeSinkPlugin(dir) },
      ],
    },
    { dir, ...(logger ? { logger } : {}) },
  );
  return server;
}

async function connect(): Promise<SmtpTestClient> {
  const client = await SmtpTestClient.connect(server!.port);
  clients.push(client);
  return client;
}

async function activeConnections(): Promise<number> {
  const metric = await server!.server.metrics.registry.getSingleMetric("mailroom_connections_active")!.get();
  return metric.values[0]?.value ?? 0;
}

async function waitFor(condition: () => Promise<boolean> | boolean, timeout: number, what: string): Promise<number> {
  const started = performance.now();
  while (!(await condition())) {
    if (performance.now() - started > timeout) throw new Error(`${what} not reached within ${timeout} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return performance.now() - started;
}

/**
 * Opens a raw connection, sends EHLO and one AUTH PLAIN in one write, and
 * hangs up once the EHLO reply is in, while the server still checks the
 * password: `end` half-closes the socket (FIN), `destroy` closes it.
 */
async function authAndHangUp(password: string, how: "end" | "destroy"): Promise<void> {
  const socket = net.connect(server!.port, "127.0.0.1");
  sockets.push(socket);
  socket.setEncoding("utf8");
  socket.on("error", () => {});
  let received = "";
  await new Promise<void>((resolve, reject) => {
    socket.on("data", (chunk: string) => {
      const greeted = received === "";
      received += chunk;
      if (greeted && received.startsWith("220 ")) {
        socket.write(`EHLO attacker.test\r\nAUTH PLAIN ${plainToken("alice", password)}\r\n`);
      }
      if (/^250 /m.test(received)) {
        if (how === "end") socket.end();
        else socket.destroy();
        resolve();
      }
    });
    socket.on("close", () => reject(new Error(`connection closed before the EHLO reply: ${JSON.stringify(received)}`)));
  });
}

describe("client that hangs up during AUTH", () => {
  for (const how of ["end", "destroy"] as const) {
    test(`frees its slot at once (${how})`, async () => {
      await start({ auth: { failureDelay: "5s" }, limits: { maxConnections: 1, maxConnectionsPerIp: 1 } });
      await authAndHangUp("wrong", how);
      const waited = await waitFor(async () => (await activeConnections()) === 0, 2000, "0 active connections");
      expect(waited).toBeLessThan(2000);

      const next = await connect();
      expect(next.greeting.code).toBe(220);
      expect((await next.command("EHLO client.test")).code).toBe(250);
      expect((await next.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`)).code).toBe(235);
    });
  }

  test("skips the failure delay", async () => {
    const logLines: string[] = [];
    await start({ auth: { failureDelay: "5s" }, logLines });
    const started = performance.now();
    await authAndHangUp("wrong", "end");
    await waitFor(() => logLines.some((line) => line.includes('"connection closed"')), 3000, "connection closed log line");
    expect(performance.now() - started).toBeLessThan(3000);
    expect(logLines.some((line) => line.includes('"authentication rejected"'))).toBe(true);
  });

  test("is released only once", async () => {
    const logLines: string[] = [];
    await start({ auth: { failureDelay: "1s" }, limits: { maxConnections: 2, maxConnectionsPerIp: 2 }, logLines });
    await authAndHangUp("wrong", "end");
    await authAndHangUp("wrong", "destroy");
    await waitFor(
      () => logLines.filter((line) => line.includes('"connection closed"')).length === 2,
      5000,
      "two connection closed log lines",
    );
    expect(await activeConnections()).toBe(0);

    // A count released twice would go below 0 and let a third client in.
    const first = await connect();
    const second = await connect();
    const third = await connect();
    expect(first.greeting.code).toBe(220);
    expect(second.greeting.code).toBe(220);
    expect(third.greeting).toMatchObject({ code: 421, enhanced: "4.7.0" });
    expect(await activeConnections()).toBe(2);
  });
});

describe("password check queue", () => {
  test("full queue gets 454 at once", async () => {
    await start({ auth: { failureDelay: 0, maxConcurrentChecks: 1, maxQueuedChecks: 1 }, cost: SLOW });
    const attempts = await Promise.all(
      [1, 2, 3, 4].map(async () => {
        const client = await connect();
        await client.command("EHLO client.test");
        return client;
      }),
    );
    const replies = await Promise.all(
      attempts.map((client) => client.command(`AUTH PLAIN ${plainToken("alice", "wrong")}`, 30_000)),
    );
    const busy = replies.filter((reply) => reply.code === 454);
    const checked = replies.filter((reply) => reply.code === 535);
    expect(busy.length).toBeGreaterThanOrEqual(1);
    expect(checked.length).toBeGreaterThanOrEqual(2);
    expect(busy[0]).toMatchObject({ enhanced: "4.7.0" });

    // 454 is temporary: the same connection may try again.
    const retry = await attempts[replies.indexOf(busy[0]!)]!.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`, 30_000);
    expect(retry.code).toBe(235);
  });

  test("attempt of a client that left leaves the queue", async () => {
    await start({ auth: { failureDelay: 0, maxConcurrentChecks: 1, maxQueuedChecks: 1 }, cost: SLOW });
    const running = await connect();
    await running.command("EHLO client.test");
    const waiting = await connect();
    await waiting.command("EHLO client.test");

    running.write(`AUTH PLAIN ${plainToken("alice", "wrong")}\r\n`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    // Takes the only queue place, then hangs up.
    await authAndHangUp("wrong", "destroy");
    await new Promise((resolve) => setTimeout(resolve, 20));
    const reply = await waiting.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`, 30_000);
    expect(reply.code).toBe(235);
    expect((await running.read(30_000)).code).toBe(535);
  });
});
