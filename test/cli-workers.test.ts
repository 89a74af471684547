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
