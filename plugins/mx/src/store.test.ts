import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
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
const oneDomain = () => ({ sender: "", domains: new Map([["ok.test", ["u@ok.test"]]]), now: 1 });

/** Splits a queue file into its state line (parsed) and its message. */
async function readQueueFile(file: string): Promise<{ state: Record<string, unknown>; message: string }> {
  const text = await readFile(file, "utf8");
  const end = text.indexOf("\n");
  return { state: JSON.parse(text.slice(0, end)), message: text.slice(end + 1) };
}

test("one record per destination domain", async () => {
  const { store } = await newStore();
  const { records, content } = await store.add(message(), {
    sender: "a@local.test",
    domains: new Map([["one.test", ["x@one.test"]], ["two.test", ["y@two.test", "z@two.test"]]]),
    now: 1000,
  });
  expect(records.map((record) => [record.domain, record.pending])).toEqual([
    ["one.test", ["x@one.test"]],
    ["two.test", ["y@two.test", "z@two.test"]],
  ]);
  expect(new Set(records.map((record) => record.messageId)).size).toBe(1);
  expect(content?.toString("utf8")).toBe("Subject: hi\r\n\r\nbody\r\n");
  for (const record of records) {
    const file = await readQueueFile(store.activePath(record.id));
    expect(file.message).toBe("Subject: hi\r\n\r\nbody\r\n");
    expect(file.state).toEqual(record);
  }
  expect((await store.list()).map((record) => record.id).sort()).toEqual(records.map((record) => record.id).sort());
  expect(await readdir(store.tmp)).toEqual([]);
});

test("buffered message is written whole", async () => {
  const { store } = await newStore();
  const parts = [Buffer.from("Received: x\r\n"), Buffer.from("Subject: hi\r\n\r\nbody\r\n")];
  const { records, content } = await store.add(parts, {
    sender: "a@local.test",
    domains: new Map([["one.test", ["x@one.test"]], ["two.test", ["y@two.test"]]]),
    now: 1,
  });
  expect(content?.toString("utf8")).toBe("Received: x\r\nSubject: hi\r\n\r\nbody\r\n");
  for (const record of records) {
    const file = await readQueueFile(store.activePath(record.id));
    expect(file.message).toBe("Received: x\r\nSubject: hi\r\n\r\nbody\r\n");
    expect(file.state.domain).toBe(record.domain);
  }
  expect(await readdir(store.tmp)).toEqual([]);
});

test("large message is streamed to every record", async () => {
  const { store } = await newStore();
  const chunk = Buffer.alloc(300 * 1024, "a");
  const body = Readable.from([Buffer.from("Subject: big\r\n\r\n"), chunk, chunk, chunk, chunk]);
  const { records, content } = await store.add(body, {
    sender: "a@local.test",
    domains: new Map([["one.test", ["x@one.test"]], ["two.test", ["y@two.test"]]]),
    now: 1,
  });
  expect(content).toBeUndefined();
  for (const record of records) {
    const file = await readQueueFile(store.activePath(record.id));
    expect(file.message.length).toBe("Subject: big\r\n\r\n".length + 4 * chunk.length);
    expect(file.state.id).toBe(record.id);
  }
  const claimed = await store.claim(records[1]!.id);
  expect(await store.readHeaders(claimed!.id)).toBe("Subject: big\r\n");
});

test("claimed add skips active", async () => {
  const { dir, store } = await newStore();
  const { records } = await store.add(message(), oneDomain(), { claim: true });
  expect(await readdir(store.active)).toEqual([]);
  expect(await store.claimedIds()).toEqual([records[0]!.id]);
  const location = await store.messageOf(records[0]!.id);
  expect((await readFile(location.path, "utf8")).slice(location.start)).toBe("Subject: hi\r\n\r\nbody\r\n");
  expect(await new QueueStore(dir, recordingLogger().logger).claim(records[0]!.id)).toBeUndefined();
  await store.unclaim(records[0]!.id);
  expect((await store.list()).map((record) => record.id)).toEqual([records[0]!.id]);
});

test("interrupted write leaves no record", async () => {
  const { store } = await newStore();
  // What a crash leaves behind: a half-written file in tmp/.
  await writeFile(path.join(store.tmp, "half-0.msg"), '{"version":2,"id":"half-0","sen');
  expect(await store.list()).toEqual([]);
  expect(await store.claim("half-0")).toBeUndefined();
});

test("unreadable record is set aside", async () => {
  const { store, lines } = await newStore();
  const {
    records: [good],
  } = await store.add(message(), oneDomain());
  await writeFile(path.join(store.active, "broken-0.msg"), "not json at all\nSubject: x\r\n\r\n");
  await writeFile(path.join(store.active, "cut-0.msg"), '{"version":2,"id":"cut-0"');
  const listed = await store.list();
  expect(listed.map((record) => record.id)).toEqual([good!.id]);
  const aside = await readdir(store.corrupt);
  expect(aside.some((name) => name.startsWith("broken-0.") && name.endsWith(".msg"))).toBe(true);
  expect(aside.some((name) => name.startsWith("cut-0.") && name.endsWith(".msg"))).toBe(true);
  expect(lines.some((line) => line.msg === "unreadable queue record set aside" && line.id === "broken-0")).toBe(true);
});

test("claimed record cannot be claimed twice", async () => {
  const { dir, store } = await newStore();
  const {
    records: [record],
  } = await store.add(message(), oneDomain());
  const other = new QueueStore(dir, recordingLogger().logger);
  const claimed = await store.claim(record!.id);
  expect(claimed?.id).toBe(record!.id);
  expect(await other.claim(record!.id)).toBeUndefined();
  expect(await store.list()).toEqual([]);
  claimed!.attempts = 3;
  await store.release(claimed!);
  expect(await readdir(store.claimed)).toEqual([]);
  expect((await readQueueFile(store.activePath(record!.id))).message).toBe("Subject: hi\r\n\r\nbody\r\n");
  const again = await other.claim(record!.id);
  expect(again?.attempts).toBe(3);
  await other.finish(record!.id);
  expect(await readdir(store.active)).toEqual([]);
  expect(await readdir(store.claimed)).toEqual([]);
});

test("claim of an ended process is recovered", async () => {
  const { dir, store } = await newStore();
  const {
    records: [record],
  } = await store.add(message(), oneDomain());
  const content = await readFile(store.activePath(record!.id));
  await rm(store.activePath(record!.id));
  const ended = spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!;
  await writeFile(path.join(store.claimed, `${record!.id}.${ended}.abcdef.msg`), content);

  const { logger, lines } = recordingLogger();
  const restarted = new QueueStore(dir, logger);
  await restarted.init();
  expect((await restarted.list()).map((item) => item.id)).toEqual([record!.id]);
  expect(await readdir(restarted.claimed)).toEqual([]);
  expect(lines.some((line) => String(line.msg).includes("claimed by a process that ended"))).toBe(true);
});

/** Writes a record of the previous format: state in ID.json, message in ID.eml. */
async function writeLegacy(folder: string, id: string, stateFile = `${id}.json`) {
  const state = { version: 1, id, messageId: "m1", sender: "a@local.test", domain: "ok.test", pending: ["u@ok.test"], failed: [], createdAt: 5, nextAttemptAt: 6, attempts: 2 };
  await writeFile(path.join(folder, stateFile), JSON.stringify(state));
  return state;
}

test("previous format is converted at start", async () => {
  const { dir, store } = await newStore();
  const state = await writeLegacy(store.active, "m1-0");
  await writeFile(path.join(store.active, "m1-0.eml"), "Subject: old\r\n\r\n");
  // Claimed by a process that ended, as a kill would leave it.
  const ended = spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!;
  await writeLegacy(store.claimed, "m1-1", `m1-1.${ended}.abcdef.json`);
  await writeFile(path.join(store.active, "m1-1.eml"), "Subject: old\r\n\r\n");
  // A state without its message cannot be delivered.
  await writeLegacy(store.active, "m1-2");

  const { logger, lines } = recordingLogger();
  const restarted = new QueueStore(dir, logger);
  await restarted.init();
  expect((await restarted.list()).map((record) => record.id).sort()).toEqual(["m1-0", "m1-1"]);
  expect((await readdir(restarted.active)).sort()).toEqual(["m1-0.msg", "m1-1.msg"]);
  expect(await readdir(restarted.claimed)).toEqual([]);
  const file = await readQueueFile(restarted.activePath("m1-0"));
  expect(file.state).toEqual({ ...state, version: 2 });
  expect(file.message).toBe("Subject: old\r\n\r\n");
  expect((await readdir(restarted.corrupt)).some((name) => name.startsWith("m1-2."))).toBe(true);
  expect(lines.some((line) => line.msg === "converted queue records of the previous format" && line.records === 2)).toBe(true);
  expect(lines.some((line) => line.msg === "unreadable queue record set aside" && line.id === "m1-2")).toBe(true);
});

test("half-done conversion keeps one copy", async () => {
  const { dir, store } = await newStore();
  // A crash after the new file was renamed in, before the old files were removed.
  const {
    records: [record],
  } = await store.add(message(), oneDomain());
  await writeLegacy(store.active, record!.id);
  await writeFile(path.join(store.active, `${record!.id}.eml`), "Subject: hi\r\n\r\nbody\r\n");

  const restarted = new QueueStore(dir, recordingLogger().logger);
  await restarted.init();
  expect(await readdir(restarted.active)).toEqual([`${record!.id}.msg`]);
  expect((await restarted.list()).map((item) => item.id)).toEqual([record!.id]);
});

/** Returns the pid of a process that has ended. */
function endedPid(): number {
  return spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!;
}

/** Adds a record and moves its queue file into claimed/, named as `pid` with `token` would name it. */
async function writeClaimed(store: QueueStore, pid: number, token = "abcdef") {
  const {
    records: [record],
  } = await store.add(message(), oneDomain());
  const file = path.join(store.claimed, `${record!.id}.${pid}.${token}.msg`);
  await writeFile(file, await readFile(store.activePath(record!.id)));
  await rm(store.activePath(record!.id));
  return { record: record!, file };
}

test.skipIf(!existsSync("/proc/self/stat"))("claim under a reused pid is recovered", async (context) => {
  const { dir, store } = await newStore();
  const {
    records: [record],
  } = await store.add(message(), oneDomain());
  const content = await readFile(store.activePath(record!.id));
  await rm(store.activePath(record!.id));
  // The claim must be older than the process that gets its pid. Pids are
  // handed out in turn, so claims are written for the next pids first.
  const pidMax = Number(await readFile("/proc/sys/kernel/pid_max", "utf8"));
  let next = endedPid();
  const names = new Map<number, string>();
  for (let count = 0; count < 3000; count++) {
    next = next + 1 >= pidMax ? 301 : next + 1;
    names.set(next, `${record!.id}.${next}.abcdef.msg`);
  }
  for (const name of names.values()) await writeFile(path.join(store.claimed, name), content);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const other = spawn("sleep", ["30"], { stdio: "ignore" });
  try {
    await new Promise((resolve) => other.once("spawn", resolve));
    const reusedName = names.get(other.pid!);
    if (!reusedName) context.skip(`the new process got pid ${other.pid}, past the 3000 claims written ahead`);
    for (const name of names.values()) if (name !== reusedName) await rm(path.join(store.claimed, name));

    const { logger, lines } = recordingLogger();
    const restarted = new QueueStore(dir, logger);
    await restarted.init();
    expect(await readdir(restarted.claimed)).toEqual([]);
    expect((await restarted.list()).map((item) => item.id)).toEqual([record!.id]);
    expect(lines.filter((line) => line.msg === "took back a queue record claimed by a process that ended")).toHaveLength(1);
  } finally {
    other.kill("SIGKILL");
  }
});

test("live claim is kept", async () => {
  const { dir, store } = await newStore();
  const other = spawn("sleep", ["30"], { stdio: "ignore" });
  try {
    await new Promise((resolve) => other.once("spawn", resolve));
    // Claimed after the process started, as that process's own claim would be.
    const { file } = await writeClaimed(store, other.pid!);
    const own = await store.add(message(), oneDomain(), { claim: true });

    const restarted = new QueueStore(dir, recordingLogger().logger);
    await restarted.init();
    expect(await restarted.takeBackAbandoned()).toBe(0);
    expect((await readdir(restarted.claimed)).sort()).toEqual(
      [path.basename(file), path.basename(store.claimedPath(own.records[0]!.id))].sort(),
    );
    expect(await restarted.list()).toEqual([]);
  } finally {
    other.kill("SIGKILL");
  }
});

test("concurrent take-backs both succeed", async () => {
  const { dir, store } = await newStore();
  const ended = endedPid();
  const content = Buffer.from('{"version":2,"id":"x","messageId":"x","sender":"","domain":"ok.test","pending":["u@ok.test"],"failed":[],"createdAt":1,"nextAttemptAt":1,"attempts":0}\nSubject: t\r\n\r\n');
  for (let index = 0; index < 2000; index++) {
    const id = `m${index}-0`;
    await writeFile(path.join(store.claimed, `${id}.${ended}.abcdef.msg`), content.toString("utf8").replaceAll('"x"', `"${id}"`));
  }
  const first = new QueueStore(dir, recordingLogger().logger);
  const second = new QueueStore(dir, recordingLogger().logger);
  const results = await Promise.allSettled([first.init(), second.init()]);
  expect(results.map((result) => result.status)).toEqual(["fulfilled", "fulfilled"]);
  expect(await readdir(store.claimed)).toEqual([]);
  expect(await readdir(store.active)).toHaveLength(2000);
  expect(await readdir(store.corrupt)).toEqual([]);
});

test("temporary files of ended processes removed", async () => {
  const { dir, store } = await newStore();
  const other = spawn("sleep", ["30"], { stdio: "ignore" });
  try {
    await new Promise((resolve) => other.once("spawn", resolve));
    const ended = endedPid();
    const names = {
      ended: `m1-0.${ended}.abcdef.0a0b0c0d.msg`,
      earlierRun: `m2-0.${process.pid}.abcdef.0a0b0c0d.msg`,
      live: `m3-0.${other.pid}.abcdef.0a0b0c0d.msg`,
      unnamedFresh: "m4-0.msg",
      unnamedOld: "m5-0.msg",
    };
    for (const name of Object.values(names)) await writeFile(path.join(store.tmp, name), "{");
    const hoursAgo = new Date(Date.now() - 2 * 3_600_000);
    await utimes(path.join(store.tmp, names.unnamedOld), hoursAgo, hoursAgo);

    await new QueueStore(dir, recordingLogger().logger).init();
    expect((await readdir(store.tmp)).sort()).toEqual([names.live, names.unnamedFresh].sort());
  } finally {
    other.kill("SIGKILL");
  }
});

test("temporary files carry the owner", async () => {
  const { store } = await newStore();
  expect(path.basename(store.temporaryPath("m1-0"))).toMatch(new RegExp(`^m1-0\\.${process.pid}\\.[0-9a-f]+\\.[0-9a-f]+\\.msg$`));
});

test("folders are created 0700", async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), "mailroom-queue-"));
  dirs.push(base);
  const store = new QueueStore(path.join(base, "var", "queue"), recordingLogger().logger);
  await store.init();
  for (const folder of [store.dir, store.tmp, store.active, store.claimed, store.corrupt]) {
    expect({ folder, mode: (await stat(folder)).mode & 0o777 }).toEqual({ folder, mode: 0o700 });
  }
});

test("read-only store changes nothing", async () => {
  const { dir, store } = await newStore();
  const { file } = await writeClaimed(store, endedPid());
  await writeFile(path.join(store.active, "broken-0.msg"), "not json at all\n");
  await writeFile(path.join(store.tmp, `m9-0.${endedPid()}.abcdef.0a0b0c0d.msg`), "{");
  const before = await snapshot(dir);

  const { logger, lines } = recordingLogger();
  const reader = new QueueStore(dir, logger, { readOnly: true });
  expect(await reader.list()).toEqual([]);
  const claimed = await reader.listClaimed();
  expect(claimed.map((entry) => [path.basename(file).startsWith(entry.id), entry.abandoned])).toEqual([[true, true]]);
  await expect(reader.init()).rejects.toThrow(/read-only/);
  await expect(reader.claim("broken-0")).rejects.toThrow(/read-only/);
  expect(await snapshot(dir)).toEqual(before);
  expect(lines.some((line) => line.msg === "unreadable queue record left in place; the server sets it aside")).toBe(true);

  const missing = new QueueStore(path.join(dir, "not-created"), logger, { readOnly: true });
  expect(await missing.list()).toEqual([]);
  expect(await missing.listClaimed()).toEqual([]);
  expect(existsSync(path.join(dir, "not-created"))).toBe(false);
});

/** Lists every file under the queue folder. */
async function snapshot(dir: string): Promise<string[]> {
  const names: string[] = [];
  for (const folder of ["tmp", "active", "claimed", "corrupt"]) {
    for (const name of await readdir(path.join(dir, folder))) names.push(`${folder}/${name}`);
  }
  return names.sort();
}

test("state line records size and 8-bit content", async () => {
  const { store } = await newStore();
  const ascii = await store.add([Buffer.from("Subject: hi\r\n\r\nbody\r\n")], oneDomain());
  expect(ascii.records[0]!.messageSize).toBe(21);
  expect(ascii.records[0]!.eightBit).toBeUndefined();
  expect(ascii.records[0]!.body8BitMime).toBeUndefined();

  const eight = await store.add(Readable.from([Buffer.from("Subject: hi\r\n\r\nGrüße\r\n")]), { ...oneDomain(), body8BitMime: true });
  const file = await readQueueFile(store.activePath(eight.records[0]!.id));
  expect(file.state.messageSize).toBe(Buffer.byteLength("Subject: hi\r\n\r\nGrüße\r\n"));
  expect(file.state.eightBit).toBe(true);
  expect(file.state.body8BitMime).toBe(true);
});

test("streamed message gets its state line last", async () => {
  const { store } = await newStore();
  const chunk = Buffer.alloc(700 * 1024, "a");
  const body = Readable.from([Buffer.from("Subject: big\r\n\r\n"), chunk, chunk, Buffer.from("é\r\n")]);
  const size = "Subject: big\r\n\r\n".length + 2 * chunk.length + Buffer.byteLength("é\r\n");
  const { records, content } = await store.add(body, {
    sender: "a@local.test",
    domains: new Map([["one.test", ["x@one.test"]], ["two.test", ["y@two.test"]]]),
    now: 1,
  });
  expect(content).toBeUndefined();
  for (const record of records) {
    const file = await readQueueFile(store.activePath(record.id));
    expect(file.state.messageSize).toBe(size);
    expect(file.state.eightBit).toBe(true);
    expect(Buffer.byteLength(file.message)).toBe(size);
    const claimed = await store.claim(record.id);
    expect(claimed?.messageSize).toBe(size);
    const location = await store.messageOf(record.id);
    expect((await stat(location.path)).size - location.start).toBe(size);
  }
});

test("queue file cut short is set aside", async () => {
  const { store, lines } = await newStore();
  const {
    records: [record],
  } = await store.add(message(), oneDomain());
  const file = store.activePath(record!.id);
  const text = await readFile(file);
  await writeFile(file, text.subarray(0, text.length - 5));

  expect((await store.list()).map((item) => item.id)).toEqual([record!.id]);
  expect(await store.claim(record!.id)).toBeUndefined();
  expect(await readdir(store.active)).toEqual([]);
  expect((await readdir(store.corrupt)).some((name) => name.startsWith(`${record!.id}.`))).toBe(true);
  const logged = lines.find((line) => line.msg === "damaged queue record set aside");
  expect(logged?.id).toBe(record!.id);
  expect(JSON.stringify(logged?.err)).toContain("its message has 16 octets, but its state line records 21");
});

/** The state line of a record written before records had a size. */
const OLD_STATE = { version: 2, messageId: "old", sender: "a@local.test", domain: "ok.test", pending: ["u@ok.test"], failed: [], createdAt: 5, nextAttemptAt: 6, attempts: 1 };

test("record without a size is still read", async () => {
  const { store } = await newStore();
  await writeFile(store.activePath("old-0"), `${JSON.stringify({ ...OLD_STATE, id: "old-0" })}\nSubject: x\r\n\r\nGrüße\r\n`);
  const claimed = await store.claim("old-0");
  const size = Buffer.byteLength("Subject: x\r\n\r\nGrüße\r\n");
  expect(claimed?.messageSize).toBe(size);
  expect(claimed?.eightBit).toBe(true);
  await store.release(claimed!);
  const file = await readQueueFile(store.activePath("old-0"));
  expect(file.state.messageSize).toBe(size);
  expect(file.state.eightBit).toBe(true);
  expect(file.message).toBe("Subject: x\r\n\r\nGrüße\r\n");
});

test("record without a size cut short is set aside", async () => {
  const { store, lines } = await newStore();
  await writeFile(store.activePath("old-1"), `${JSON.stringify({ ...OLD_STATE, id: "old-1" })}\nSubject: x\r\n\r\nfirst half of the mess`);
  expect(await store.claim("old-1")).toBeUndefined();
  expect((await readdir(store.corrupt)).some((name) => name.startsWith("old-1."))).toBe(true);
  const logged = lines.find((line) => line.msg === "damaged queue record set aside");
  expect(JSON.stringify(logged?.err)).toContain("does not end in CRLF");
});

test("file name wins over the state line id", async () => {
  const { store, lines } = await newStore();
  const {
    records: [record],
  } = await store.add(message(), oneDomain());
  await rename(store.activePath(record!.id), store.activePath("renamed-0"));

  expect((await store.list()).map((item) => item.id)).toEqual(["renamed-0"]);
  expect((await store.readActive("renamed-0"))?.id).toBe("renamed-0");
  const claimed = await store.claim("renamed-0");
  expect(claimed?.id).toBe("renamed-0");
  expect(claimed?.messageId).toBe(record!.messageId);
  const warning = lines.find((line) => line.msg === "queue record file name differs from the id in its state line; using the file name");
  expect(warning).toMatchObject({ id: "renamed-0", stateLineId: record!.id });
  await store.release(claimed!);
  expect((await readQueueFile(store.activePath("renamed-0"))).state.id).toBe("renamed-0");
});
