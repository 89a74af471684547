import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pino } from "pino";
import { afterEach, expect, test } from "vitest";
import { QueueStore } from "./store.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

function recordingLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

async function newStore() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-queue-"));
  dirs.push(dir);
  const { logger, lines } = recordingLogger();
  const store = new QueueStore(dir, logger);
  await store.init();
  return { dir, store, lines };
}

const message = () => Readable.from([Buffer.from("Subject: hi\r\n\r\nbody\r\n")]);

test("one record per destination domain", async () => {
  const { store } = await newStore();
  const records = await store.add(message(), {
    sender: "a@local.test",
    domains: new Map([["one.test", ["x@one.test"]], ["two.test", ["y@two.test", "z@two.test"]]]),
    now: 1000,
  });
  expect(records.map((record) => [record.domain, record.pending])).toEqual([
    ["one.test", ["x@one.test"]],
    ["two.test", ["y@two.test", "z@two.test"]],
  ]);
  expect(new Set(records.map((record) => record.messageId)).size).toBe(1);
  for (const record of records) {
    expect(await readFile(store.bodyPath(record.id), "utf8")).toBe("Subject: hi\r\n\r\nbody\r\n");
  }
  expect((await store.list()).map((record) => record.id).sort()).toEqual(records.map((record) => record.id).sort());
  expect(await readdir(store.tmp)).toEqual([]);
});

test("interrupted write leaves no record", async () => {
  const { store } = await newStore();
  // What a crash leaves behind: a half-written state in tmp/ and a message file without state.
  await writeFile(path.join(store.tmp, "half-0.json"), '{"version":1,"id":"half-0","sen');
  await writeFile(path.join(store.active, "orphan-0.eml"), "Subject: lost\r\n\r\n");
  expect(await store.list()).toEqual([]);
  expect(await store.claim("half-0")).toBeUndefined();
});

test("unreadable record is set aside", async () => {
  const { store, lines } = await newStore();
  const [good] = await store.add(message(), { sender: "", domains: new Map([["ok.test", ["u@ok.test"]]]), now: 1 });
  await writeFile(path.join(store.active, "broken-0.json"), "not json at all");
  await writeFile(path.join(store.active, "broken-0.eml"), "Subject: x\r\n\r\n");
  const listed = await store.list();
  expect(listed.map((record) => record.id)).toEqual([good!.id]);
  const aside = await readdir(store.corrupt);
  expect(aside.some((name) => name.startsWith("broken-0.") && name.endsWith(".json"))).toBe(true);
  expect(aside.some((name) => name.endsWith(".eml"))).toBe(true);
  expect(lines.some((line) => line.msg === "unreadable queue record set aside" && line.id === "broken-0")).toBe(true);
});

test("claimed record cannot be claimed twice", async () => {
  const { dir, store } = await newStore();
  const [record] = await store.add(message(), { sender: "", domains: new Map([["ok.test", ["u@ok.test"]]]), now: 1 });
  const other = new QueueStore(dir, recordingLogger().logger);
  const claimed = await store.claim(record!.id);
  expect(claimed?.id).toBe(record!.id);
  expect(await other.claim(record!.id)).toBeUndefined();
  expect(await store.list()).toEqual([]);
  claimed!.attempts = 3;
  await store.release(claimed!);
  const again = await other.claim(record!.id);
  expect(again?.attempts).toBe(3);
  await other.finish(record!.id);
  expect(await readdir(store.active)).toEqual([]);
});

test("claim of an ended process is recovered", async () => {
  const { dir, store } = await newStore();
  const [record] = await store.add(message(), { sender: "", domains: new Map([["ok.test", ["u@ok.test"]]]), now: 1 });
  const state = await readFile(path.join(store.active, `${record!.id}.json`), "utf8");
  await rm(path.join(store.active, `${record!.id}.json`));
  const ended = spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!;
  await writeFile(path.join(store.claimed, `${record!.id}.${ended}.abcdef.json`), state);

  const { logger, lines } = recordingLogger();
  const restarted = new QueueStore(dir, logger);
  await restarted.init();
  expect((await restarted.list()).map((item) => item.id)).toEqual([record!.id]);
  expect(await readdir(restarted.claimed)).toEqual([]);
  expect(lines.some((line) => String(line.msg).includes("claimed by a process that ended"))).toBe(true);
});
