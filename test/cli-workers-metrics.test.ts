import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SmtpTestClient } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";
import { metricsTarget } from "../packages/core/src/metrics.js";

const BIN = fileURLToPath(new URL("../packages/cli/bin/mailroom.js", import.meta.url));

let dir: string;
let child: ChildProcess | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-workers-metrics-"));
});

afterEach(async () => {
  child?.kill("SIGKILL");
  child = undefined;
  await rm(dir, { recursive: true, force: true });
});

type LogLine = Record<string, unknown>;

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** Returns a port P in 30000-39998 with P and P + 1 free on 127.0.0.1. */
async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 30_000 + Math.floor(Math.random() * 9_999);
    if ((await portIsFree(port)) && (await portIsFree(port + 1))) return port;
  }
  throw new Error("no two free consecutive ports found in 30000-39999");
}

/** Starts `mailroom start` with two workers and `metricsListen`; returns its log reader. */
async function startWorkers(metricsListen: string): Promise<() => LogLine[]> {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, `server:\n  listen: ["127.0.0.1:0"]\n  workers: 2\n  metrics: { listen: "${metricsListen}" }\n`);
  child = spawn(process.execPath, [BIN, "start", "--config", file], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));
  const logs = () =>
    output
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as LogLine);
  await expect.poll(() => metricsLines(logs()).length, { timeout: 20_000 }).toBe(2);
  return logs;
}

function metricsLines(lines: LogLine[]): LogLine[] {
  return lines.filter((line) => line.msg === "metrics listening");
}

async function admittedConnections(port: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).toBe(200);
  const match = /^mailroom_connections_total\{result="admitted"\} (\d+)$/m.exec(await response.text());
  return match ? Number(match[1]) : 0;
}

/** Stops the primary with SIGTERM; a non-zero exit shows the last log lines. */
async function stop(logs: () => LogLine[]): Promise<void> {
  const exit = new Promise((resolve) => child!.once("exit", resolve));
  child!.kill("SIGTERM");
  const code = await exit;
  expect(code, JSON.stringify(logs().slice(-12), null, 1)).toBe(0);
}

test("metrics target adds the worker offset", () => {
  expect(metricsTarget("127.0.0.1:9464", 0)).toEqual({ host: "127.0.0.1", port: 9464 });
  expect(metricsTarget("127.0.0.1:9464", 3)).toEqual({ host: "127.0.0.1", port: 9467 });
  expect(metricsTarget("[::1]:0", 3)).toEqual({ host: "::1", port: 0 });
  expect(() => metricsTarget("127.0.0.1:65535", 1)).toThrow(/65536 is above 65535/);
});

test("each worker serves metrics on its own port", { timeout: 60_000 }, async () => {
  const base = await freePortPair();
  const logs = await startWorkers(`127.0.0.1:${base}`);
  const lines = metricsLines(logs());
  const portBySlot = new Map(lines.map((line) => [line.slot, line.port]));
  expect(portBySlot).toEqual(new Map([[1, base], [2, base + 1]]));

  const smtpPort = logs().find((line) => line.msg === "listening")!.port as number;
  for (let index = 0; index < 10; index++) {
    const client = await SmtpTestClient.connect(smtpPort);
    await client.command("QUIT");
    await client.closed();
  }

  // Each port reports one worker's counts, the same on every scrape, and
  // the two add up to every connection.
  const first = [await admittedConnections(base), await admittedConnections(base + 1)];
  expect(first[0]! + first[1]!).toBe(10);
  for (let index = 0; index < 5; index++) {
    expect(await admittedConnections(base)).toBe(first[0]);
    expect(await admittedConnections(base + 1)).toBe(first[1]);
  }
  await stop(logs);
});

test("workers with metrics port 0 get separate ports", { timeout: 60_000 }, async () => {
  const logs = await startWorkers("127.0.0.1:0");
  const ports = metricsLines(logs()).map((line) => line.port as number);
  expect(new Set(ports).size).toBe(2);
  for (const port of ports) expect(await admittedConnections(port)).toBe(0);
  await stop(logs);
});

test("restarted worker keeps its metrics port", { timeout: 60_000 }, async () => {
  const base = await freePortPair();
  const logs = await startWorkers(`127.0.0.1:${base}`);
  const second = metricsLines(logs()).find((line) => line.slot === 2)!;
  process.kill(second.pid as number, "SIGKILL");

  // The primary forks a replacement after its restart delay of 1 s.
  await expect.poll(() => metricsLines(logs()).length, { timeout: 20_000 }).toBe(3);
  const replacement = metricsLines(logs())[2]!;
  expect(replacement.worker).toBe(3);
  expect(replacement.slot).toBe(2);
  expect(replacement.port).toBe(base + 1);
  expect(await admittedConnections(base + 1)).toBe(0);
  await stop(logs);
});
