import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Readable } from "node:stream";
import { parseConfig } from "@mailroom/core";
import { pino } from "pino";
import { afterEach, expect, test, vi } from "vitest";
import { queueDelete, queueList, queueRetry, queueShow, table } from "./cli.js";
import { QueueStore } from "./store.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function fixture() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-cli-"));
  dirs.push(dir);
  const config = parseConfig(
    ['plugins:', '  - use: "@mailroom/plugin-mx"', "    with: { queueDir: ./spool/out }", ""].join("\n"),
    path.join(dir, "mailroom.yaml"),
    dir,
  );
  const store = new QueueStore(path.join(dir, "spool/out"), pino({ level: "silent" }));
  await store.init();
  const {
    records: [first, second],
  } = await store.add(Readable.from([Buffer.from("Subject: x\r\n\r\n")]), {
    sender: "alice@local.test",
    domains: new Map([["one.test", ["a@one.test", "b@one.test"]], ["two.test", ["c@two.test"]]]),
    now: Date.UTC(2026, 0, 5, 9, 0, 0),
  });
  const claimed = await store.claim(second!.id);
  claimed!.attempts = 2;
  claimed!.nextAttemptAt = Date.UTC(2026, 0, 5, 10, 0, 0);
  claimed!.lastError = "451 4.4.3 MX lookup for two.test failed temporarily: servfail";
  await store.release(claimed!);
  return { config, store, first: first!, second: second! };
}

test("list prints a table", async () => {
  const { config, first, second } = await fixture();
  const lines = (await queueList(config)).split("\n");
  expect(lines[0]).toMatch(/^ID\s+SENDER\s+DOMAIN\s+RECIPIENTS\s+ATTEMPTS\s+NEXT ATTEMPT\s+LAST ERROR$/);
  const firstRow = lines.find((line) => line.startsWith(first.id))!;
  expect(firstRow.split(/\s{2,}/)).toEqual([first.id, "alice@local.test", "one.test", "2", "0", "2026-01-05T09:00:00Z"]);
  const secondRow = lines.find((line) => line.startsWith(second.id))!;
  expect(secondRow).toContain("2026-01-05T10:00:00Z");
  expect(secondRow).toContain("451 4.4.3 MX lookup for two.test failed temporarily");
});

test("table of 200,000 rows", () => {
  // As many rows as a large queue lists; spreading them into Math.max overflowed the stack.
  const rows = [["ID", "DOMAIN"], ...Array.from({ length: 200_000 }, (_, index) => [`id-${index}`, "one.test"])];
  const lines = table(rows).split("\n");
  expect(lines).toHaveLength(200_001);
  expect(lines[0]).toBe("ID         DOMAIN");
  expect(lines.at(-1)).toBe("id-199999  one.test");
});

test("show, retry and delete one record", async () => {
  const { config, store, first, second } = await fixture();
  const shown = await queueShow(config, second.id);
  expect(shown).toContain("Domain:       two.test");
  expect(shown).toContain("  c@two.test");

  const before = Date.now();
  expect(await queueRetry(config, { id: second.id })).toBe(1);
  const retried = (await store.list()).find((record) => record.id === second.id)!;
  expect(retried.nextAttemptAt).toBeGreaterThanOrEqual(before);
  expect(await queueRetry(config, { all: true })).toBe(2);

  await queueDelete(config, first.id);
  expect((await store.list()).map((record) => record.id)).toEqual([second.id]);
  await expect(queueDelete(config, first.id)).rejects.toThrow(/no queued message/);
  await expect(queueShow(config, "nosuch")).rejects.toThrow(/no queued message nosuch/);
});

test("list leaves the queue unchanged", async () => {
  const { config, store, first, second } = await fixture();
  // A record claimed by a process that ended, an unreadable record and a leftover write.
  const ended = spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!;
  await rename(store.activePath(second.id), path.join(store.claimed, `${second.id}.${ended}.abcdef.msg`));
  await writeFile(path.join(store.active, "broken-0.msg"), "not json at all\n");
  await writeFile(path.join(store.tmp, `m9-0.${ended}.abcdef.0a0b0c0d.msg`), "{");
  const before = await listFiles(store.dir);

  const lines = (await queueList(config)).split("\n");
  expect(lines.find((line) => line.startsWith(first.id))).toContain("2026-01-05T09:00:00Z");
  // Not "delivering": the server's next scan takes the record back.
  expect(lines.find((line) => line.startsWith(second.id))).toContain("2026-01-05T10:00:00Z");
  expect(await queueShow(config, second.id)).toContain("Next attempt: 2026-01-05T10:00:00Z");
  expect(await listFiles(store.dir)).toEqual(before);
});

test("list of a queue not created yet", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-cli-"));
  dirs.push(dir);
  const config = parseConfig(
    ['plugins:', '  - use: "@mailroom/plugin-mx"', "    with: { queueDir: ./queue }", ""].join("\n"),
    path.join(dir, "mailroom.yaml"),
    dir,
  );
  expect(await queueList(config)).toBe("The outbound queue is empty.");
  expect(existsSync(path.join(dir, "queue"))).toBe(false);
});

/** Lists every file under a queue folder with its content. */
async function listFiles(dir: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const folder of ["tmp", "active", "claimed", "corrupt"]) {
    for (const name of await readdir(path.join(dir, folder))) {
      files[`${folder}/${name}`] = await readFile(path.join(dir, folder, name), "utf8");
    }
  }
  return files;
}

test("config without plugin-mx is rejected", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-cli-"));
  dirs.push(dir);
  const config = parseConfig("plugins: []\n", path.join(dir, "mailroom.yaml"), dir);
  await expect(queueList(config)).rejects.toThrow(/mailroom\.yaml: no @mailroom\/plugin-mx entry/);
});

/** Writes a config with the given plugins entries (YAML lines) in a new folder. */
async function configWith(entries: string[]) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-cli-"));
  dirs.push(dir);
  return { dir, config: parseConfig(["plugins:", ...entries, ""].join("\n"), path.join(dir, "mailroom.yaml"), dir) };
}

test("local plugin named like mx is not plugin-mx", async () => {
  const { dir, config } = await configWith([
    "  - use: ./plugins/mx-routing.ts",
    "  - use: ./plugins/mx/index.ts",
    '  - use: "@mailroom/plugin-mx"',
    "    with: { queueDir: ./var/queue }",
  ]);
  const store = new QueueStore(path.join(dir, "var/queue"), pino({ level: "silent" }));
  await store.init();
  const {
    records: [record],
  } = await store.add([Buffer.from("Subject: x\r\n\r\n")], {
    sender: "alice@local.test",
    domains: new Map([["down.test", ["bob@down.test"]]]),
    now: Date.UTC(2026, 0, 5, 9, 0, 0),
  });

  expect(await queueList(config)).toContain(record!.id);
  expect(await queueRetry(config, { all: true })).toBe(1);
  expect(existsSync(path.join(dir, "queue"))).toBe(false);
  expect(existsSync(path.join(dir, "plugins"))).toBe(false);
});

test("path to plugin-mx source is plugin-mx", async () => {
  const source = fileURLToPath(new URL("./index.ts", import.meta.url));
  const { dir, config } = await configWith([`  - use: ${JSON.stringify(source)}`, "    with: { queueDir: ./outbound }"]);
  const store = new QueueStore(path.join(dir, "outbound"), pino({ level: "silent" }));
  await store.init();
  await store.add([Buffer.from("Subject: x\r\n\r\n")], {
    sender: "alice@local.test",
    domains: new Map([["down.test", ["bob@down.test"]]]),
    now: Date.UTC(2026, 0, 5, 9, 0, 0),
  });
  expect(await queueList(config)).toContain("down.test");
});

test("retry and delete create no queue folder", async () => {
  const { dir, config } = await configWith(['  - use: "@mailroom/plugin-mx"', "    with: { queueDir: ./queue }"]);
  expect(await queueRetry(config, { all: true })).toBe(0);
  await expect(queueRetry(config, { id: "m1-0" })).rejects.toThrow(/no queued message m1-0/);
  await expect(queueDelete(config, "m1-0")).rejects.toThrow(/no queued message m1-0/);
  expect(existsSync(path.join(dir, "queue"))).toBe(false);
});

test("warning about an unreadable record gives the reason", async () => {
  const { config, store } = await fixture();
  await writeFile(path.join(store.active, "broken-0.msg"), "not json at all\n");
  const written: string[] = [];
  const write = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
  try {
    await queueList(config);
  } finally {
    write.mockRestore();
  }
  const warning = written.find((line) => line.includes("unreadable queue record left in place"));
  expect(warning).toBeDefined();
  expect(warning).toContain('"id":"broken-0"');
  expect(warning).toContain('"err":{"type":"SyntaxError","message":');
  expect(warning).toContain("is not valid JSON");
});

test("renamed record listed and deleted by file name", async () => {
  const { config, store, first } = await fixture();
  await rename(store.activePath(first.id), store.activePath("handmade-0"));
  const lines = (await queueList(config)).split("\n");
  expect(lines.some((line) => line.startsWith("handmade-0 "))).toBe(true);
  expect(lines.some((line) => line.startsWith(`${first.id} `))).toBe(false);
  expect(await queueShow(config, "handmade-0")).toContain("ID:           handmade-0");
  await queueDelete(config, "handmade-0");
  expect(await readdir(store.active)).not.toContain("handmade-0.msg");
});
