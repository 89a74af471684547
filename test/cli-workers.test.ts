import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SmtpTestClient } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";

const BIN = fileURLToPath(new URL("../packages/cli/bin/mailroom.js", import.meta.url));

let dir: string;
let child: ChildProcess | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-workers-"));
});

afterEach(async () => {
  child?.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

function logLines(output: string): Record<string, unknown>[] {
  return output
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line));
}

test("two workers share one port and stop on SIGTERM", async () => {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, 'server:\n  listen: ["127.0.0.1:0"]\n  workers: 2\n');
  child = spawn(process.execPath, [BIN, "start", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));

  await expect
    .poll(() => logLines(output).filter((line) => line.msg === "listening").length, { timeout: 20_000 })
    .toBe(2);
  const listening = logLines(output).filter((line) => line.msg === "listening");
  expect(new Set(listening.map((line) => line.worker))).toEqual(new Set([1, 2]));
  expect(listening[0]!.port).toBe(listening[1]!.port);

  // The workers accept on the shared socket themselves and the kernel picks
  // which one gets a connection, so it may take a few until both served one.
  const servedBy = () => new Set(logLines(output).filter((line) => line.msg === "connection opened").map((line) => line.worker));
  for (let index = 0; index < 40 && servedBy().size < 2; index++) {
    const client = await SmtpTestClient.connect(listening[0]!.port as number);
    expect((await client.command("NOOP")).code).toBe(250);
    await client.command("QUIT");
    await client.closed();
  }
  expect(servedBy()).toEqual(new Set([1, 2]));

  const exit = new Promise((resolve) => child!.once("exit", resolve));
  child.kill("SIGTERM");
  expect(await exit).toBe(0);
});

// A worker that gets RCPT TO:<crash@...> kills itself at once, like a
// plugin bug that takes the process down, without depending on how the
// server handles uncaught errors.
const CRASH_PLUGIN = `
import { definePlugin } from "@mailroom/core";
export default definePlugin({
  name: "crash",
  setup: () => ({
    rcpt({ address }) {
      if (address.local === "crash") process.kill(process.pid, "SIGKILL");
      return undefined;
    },
  }),
});
`;
const CRASH_CONFIG = 'server:\n  listen: ["127.0.0.1:0"]\n  workers: 2\nplugins:\n  - use: ./crash.ts\n';

/** Starts `mailroom start` with the crash plugin; returns the log reader and the shared port. */
async function startCrashable(): Promise<{ file: string; logs: () => Record<string, unknown>[]; port: number }> {
  await writeFile(path.join(dir, "crash.ts"), CRASH_PLUGIN);
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, CRASH_CONFIG);
  child = spawn(process.execPath, [BIN, "start", "--config", file], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));
  const logs = () => logLines(output);
  await expect.poll(() => listening(logs()).length, { timeout: 20_000 }).toBe(2);
  return { file, logs, port: listening(logs())[0]!.port as number };
}

function listening(lines: Record<string, unknown>[]) {
  return lines.filter((line) => line.msg === "listening");
}

function withMessage(lines: Record<string, unknown>[], msg: string) {
  return lines.filter((line) => line.msg === msg);
}

/** Makes whichever worker takes the connection kill itself. */
async function crashOneWorker(port: number): Promise<void> {
  const client = await SmtpTestClient.connect(port);
  await client.command("EHLO client.example");
  await client.command("MAIL FROM:<a@client.example>");
  client.write("RCPT TO:<crash@server.example>\r\n");
  await client.closed();
}

test("worker that crashes after listening is restarted with a growing delay", { timeout: 90_000 }, async () => {
  const { logs, port } = await startCrashable();

  await crashOneWorker(port);
  await expect.poll(() => listening(logs()).length, { timeout: 20_000 }).toBe(3);
  await crashOneWorker(port);
  await expect.poll(() => listening(logs()).length, { timeout: 20_000 }).toBe(4);

  const died = withMessage(logs(), "worker died");
  expect(died.map((line) => line.listening)).toEqual([true, true]);
  for (const line of died) expect([1, 2]).toContain(line.slot);
  const restarts = withMessage(logs(), "restarting worker");
  expect(restarts.map((line) => line.delayMs)).toEqual([1000, 2000]);
  expect(restarts.map((line) => line.slot)).toEqual(died.map((line) => line.slot));
  // Each replacement takes over the slot of the worker it replaces.
  for (const [index, restart] of restarts.entries()) expect(listening(logs())[index + 2]!.slot).toBe(restart.slot);
  // Each replacement was forked only after its delay.
  const started = listening(logs());
  for (const [index, restart] of restarts.entries()) {
    const replacement = started[index + 2]!;
    expect((replacement.time as number) - (restart.time as number)).toBeGreaterThanOrEqual(restart.delayMs as number);
  }

  // Two workers serve again.
  const client = await SmtpTestClient.connect(port);
  expect((await client.command("NOOP")).code).toBe(250);
  await client.command("QUIT");
  const exit = new Promise((resolve) => child!.once("exit", resolve));
  child!.kill("SIGTERM");
  expect(await exit).toBe(0);
});

test("worker that fails to start waits for SIGHUP", { timeout: 90_000 }, async () => {
  const { file, logs, port } = await startCrashable();
  // The replacement reads this config and exits before it listens.
  await writeFile(file, `${CRASH_CONFIG}  hostnme: typo\n`);
  await crashOneWorker(port);

  const notRestarted = "worker exited before it was listening and is not restarted; fix the cause, then send SIGHUP to start the missing workers";
  await expect.poll(() => withMessage(logs(), notRestarted).length, { timeout: 20_000 }).toBe(1);
  // No fork loop: nothing more is forked while the config stays broken.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  expect(withMessage(logs(), "worker died").map((line) => line.listening)).toEqual([true, false]);
  expect(withMessage(logs(), "restarting worker")).toHaveLength(1);
  expect(listening(logs())).toHaveLength(2);

  await writeFile(file, CRASH_CONFIG);
  child!.kill("SIGHUP");
  await expect.poll(() => listening(logs()).length, { timeout: 20_000 }).toBe(3);
  expect(withMessage(logs(), "starting missing workers").map((line) => line.workers)).toEqual([1]);
  await expect.poll(() => withMessage(logs(), "config reloaded").length, { timeout: 20_000 }).toBe(1);

  const client = await SmtpTestClient.connect(port);
  expect((await client.command("NOOP")).code).toBe(250);
  await client.command("QUIT");
  const exit = new Promise((resolve) => child!.once("exit", resolve));
  child!.kill("SIGTERM");
  expect(await exit).toBe(0);
});

test("SIGHUP while a worker starts reaches it once it listens", { timeout: 90_000 }, async () => {
  const { logs, port } = await startCrashable();
  await crashOneWorker(port);
  await expect.poll(() => withMessage(logs(), "restarting worker").length, { timeout: 20_000 }).toBe(1);
  // The replacement is forked after 1 s and takes a few hundred ms to listen;
  // SIGHUP's default action would end it before its handler is installed.
  await new Promise((resolve) => setTimeout(resolve, 1100));
  child!.kill("SIGHUP");

  await expect.poll(() => listening(logs()).length, { timeout: 20_000 }).toBe(3);
  const replacement = listening(logs())[2]!.worker;
  await expect
    .poll(() => withMessage(logs(), "config reloaded").filter((line) => line.worker === replacement).length, { timeout: 20_000 })
    .toBe(1);
  expect(withMessage(logs(), "worker died")).toHaveLength(1);

  const exit = new Promise((resolve) => child!.once("exit", resolve));
  child!.kill("SIGTERM");
  expect(await exit).toBe(0);
});
