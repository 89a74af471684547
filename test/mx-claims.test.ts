// Records left claimed by a process that ended while the server runs, and
// bounces whose records cannot be claimed.
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterEach, expect, test } from "vitest";
import { QueueStore } from "../plugins/mx/src/store.js";
import { makeServerDir, startDns, startMailroom, startRemoteMx, TestClock, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const ZONE = { "ok.test": { MX: [[10, "mx.ok.test"]] as [number, string][] }, "mx.ok.test": { A: ["127.0.0.1"] } };
const quiet = pino({ level: "silent" });
const message = () => [Buffer.from("Subject: stranded\r\nFrom: alice@local.test\r\n\r\nbody\r\n")];

test("scan takes back a claim of an ended process", async () => {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port, pollInterval: "200ms" } });
  cleanup.push(() => server.stop());

  // What a `mailroom queue retry` killed with -9 leaves: its claim, under its pid.
  const scratch = await mkdtemp(path.join(os.tmpdir(), "mailroom-scratch-"));
  cleanup.push(() => rm(scratch, { recursive: true, force: true }));
  const writer = new QueueStore(scratch, quiet);
  await writer.init();
  const {
    records: [record],
  } = await writer.add(message(), { sender: "alice@local.test", domains: new Map([["ok.test", ["bob@ok.test"]]]), now: Date.now() });
  const ended = spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!;
  const queue = path.join(dir, "queue");
  const staged = path.join(queue, "tmp", "staged");
  await writeFile(staged, await readFile(writer.activePath(record!.id)));
  await rename(staged, path.join(queue, "claimed", `${record!.id}.${ended}.abcdef.msg`));

  await waitFor(() => remote.received.length === 1, "delivery of the taken-back record");
  expect(remote.received[0]!.to).toEqual(["bob@ok.test"]);
  await waitFor(async () => (await readdir(path.join(queue, "claimed"))).length === 0, "an empty claimed/");
  expect(server.logs.some((line) => line.msg === "took back a queue record claimed by a process that ended" && line.id === record!.id)).toBe(true);
});

test("bounce retried when a record cannot be claimed", async (context) => {
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const queue = path.join(dir, "queue");

  // Two records of one message whose recipients failed, written before the start.
  const writer = new QueueStore(queue, quiet);
  await writer.init();
  const clock = new TestClock(Date.UTC(2026, 0, 5, 9, 0, 0));
  const { records } = await writer.add(message(), {
    sender: "alice@local.test",
    domains: new Map([["one.test", ["x@one.test"]], ["two.test", ["y@two.test"]]]),
    now: clock.now(),
  });
  for (const record of records) {
    const claimed = (await writer.claim(record.id))!;
    claimed.failed = claimed.pending.map((recipient) => ({ recipient, code: 550, enhanced: "5.1.1", response: "550 5.1.1 no such user" }));
    claimed.pending = [];
    claimed.attempts = 1;
    await writer.release(claimed);
  }
  // An immutable file cannot be renamed, not even by root: claiming it fails with EPERM.
  const locked = writer.activePath(records[1]!.id);
  const chattr = spawnSync("chattr", ["+i", locked], { encoding: "utf8" });
  if (chattr.status !== 0) context.skip(`chattr +i failed (${chattr.stderr || chattr.error}); this test needs root on a file system with attributes`);
  cleanup.push(() => void spawnSync("chattr", ["-i", locked]));

  const server = await startMailroom({ dir, dns, clock });
  cleanup.push(() => server.stop());
  const failure = await waitFor(
    () => server.logs.find((line) => line.msg === "queue records of a bounce could not be claimed; trying again later"),
    "the failed claim",
  );
  expect(failure.level).toBe(50);
  expect(failure.retryAt).toBe(clock.now() + 5 * 60_000);
  // The record that was claimed went back, so neither is stuck in claimed/.
  await waitFor(async () => (await readdir(path.join(queue, "active"))).length === 2, "both records in active/");
  expect(await readdir(path.join(queue, "claimed"))).toEqual([]);
  expect(server.logs.some((line) => line.msg === "delivery run failed")).toBe(false);
  expect(await server.local()).toEqual([]);

  spawnSync("chattr", ["-i", locked]);
  clock.advance(5 * 60_000);
  const [bounce] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "the bounce after the retry");
  expect(bounce!.to).toEqual(["alice@local.test"]);
  expect(bounce!.data).toContain("Final-Recipient: rfc822; x@one.test");
  expect(bounce!.data).toContain("Final-Recipient: rfc822; y@two.test");
  await waitFor(async () => (await readdir(path.join(queue, "active"))).length === 0, "an empty queue");
  expect(await readdir(path.join(queue, "claimed"))).toEqual([]);
});
