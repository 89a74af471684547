import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { bootTime, OwnerCheck, processAlive, processStartTime, removeLeftovers } from "./process-alive.js";

const LINUX_PROC = existsSync("/proc/self/stat") && existsSync("/proc/uptime");

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** Returns the pid of a process that has ended. */
function endedPid(): number {
  return spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!;
}

/** Starts a process that runs until the test ends, and waits until it has started. */
async function startSleeper(): Promise<ChildProcess> {
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  cleanup.push(() => void child.kill("SIGKILL"));
  await new Promise((resolve) => child.once("spawn", resolve));
  return child;
}

test("ended pid is gone", () => {
  const pid = endedPid();
  expect(processAlive(pid)).toBe(false);
  expect(new OwnerCheck().gone(pid, Date.now())).toBe(true);
});

test("own entry made now is kept", () => {
  expect(new OwnerCheck().gone(process.pid, Date.now())).toBe(false);
});

test.skipIf(!LINUX_PROC)("start time read from /proc", () => {
  const started = processStartTime(process.pid)!;
  const expected = Date.now() - process.uptime() * 1000;
  // /proc counts from the fork, a little before Node.js starts its uptime.
  expect(Math.abs(started - expected)).toBeLessThan(1000);
  expect(bootTime()!).toBeLessThan(started);
  expect(processStartTime(endedPid())).toBeUndefined();
});

test.skipIf(!LINUX_PROC)("entry older than a reused pid's process is gone", async () => {
  const child = await startSleeper();
  const owners = new OwnerCheck();
  // Made a minute before the process that has the pid now started: another process made it.
  expect(owners.gone(child.pid!, Date.now() - 60_000)).toBe(true);
  expect(owners.gone(child.pid!, Date.now())).toBe(false);
});

test.skipIf(!LINUX_PROC)("entry from before the boot is gone", () => {
  expect(new OwnerCheck().gone(process.pid, bootTime()! - 10_000)).toBe(true);
});

test("leftovers of ended processes removed", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-leftovers-"));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const child = await startSleeper();
  const ended = endedPid();
  for (const pid of [ended, child.pid!, process.pid]) await mkdir(path.join(dir, `spool-${pid}-x`));
  await mkdir(path.join(dir, "unrelated"));

  removeLeftovers(dir, /^spool-(\d+)-/);
  expect((await readdir(dir)).sort()).toEqual([`spool-${child.pid}-x`, `spool-${process.pid}-x`, "unrelated"].sort());
});
