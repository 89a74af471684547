import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { readWithPython } from "../test-support/read-maildir.js";
import { deliverToMaildir, directoryFsyncCount, ensureMaildir, MaildirError, tmpCleanupsDone } from "./deliver.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "maildir-unit-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const list = (dir: string) => readdir(dir).catch(() => [] as string[]);

describe("deliverToMaildir", () => {
  test("stores the message in new/ with mode 0700 folders", async () => {
    const maildir = path.join(root, "example.test", "alice", "Maildir");
    const delivery = await deliverToMaildir(maildir, "Subject: hi\r\n\r\nbody\r\n");

    for (const sub of ["tmp", "new", "cur"]) {
      expect((await stat(path.join(maildir, sub))).mode & 0o777).toBe(0o700);
    }
    expect(delivery.path).toBe(path.join(maildir, "new", delivery.name));
    expect(delivery.size).toBe(21);
    expect(await readFile(delivery.path, "utf8")).toBe("Subject: hi\r\n\r\nbody\r\n");
    expect((await stat(delivery.path)).mode & 0o777).toBe(0o600);
    expect(await list(path.join(maildir, "tmp"))).toEqual([]);

    const read = await readWithPython(maildir);
    expect(read.map((message) => [message.key, message.subdir])).toEqual([[delivery.name, "new"]]);
  });

  test("copies a stream byte for byte", async () => {
    const maildir = path.join(root, "Maildir");
    const chunks = Array.from({ length: 64 }, (_, index) => Buffer.alloc(64 * 1024, index));
    const delivery = await deliverToMaildir(maildir, Readable.from(chunks));
    expect((await readFile(delivery.path)).equals(Buffer.concat(chunks))).toBe(true);
  });

  test("writes the host name escaped into the file name", async () => {
    const maildir = path.join(root, "Maildir");
    const delivery = await deliverToMaildir(maildir, "x\r\n", { hostname: "mx/a:b" });
    expect(delivery.name.endsWith(".mx\\057a\\072b")).toBe(true);
    expect(await list(path.join(maildir, "new"))).toEqual([delivery.name]);
    expect((await readWithPython(maildir))[0]!.key).toBe(delivery.name);
  });

  test("removes the tmp file and leaves new/ alone when the source fails", async () => {
    const maildir = path.join(root, "Maildir");
    async function* broken() {
      yield Buffer.from("Subject: half\r\n");
      throw Object.assign(new Error("spool unreadable"), { code: "EIO" });
    }
    const error = await deliverToMaildir(maildir, broken()).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(MaildirError);
    expect((error as MaildirError).code).toBe("EIO");
    expect((error as MaildirError).step).toBe("write");
    expect((error as MaildirError).isFull).toBe(false);
    expect(await list(path.join(maildir, "tmp"))).toEqual([]);
    expect(await list(path.join(maildir, "new"))).toEqual([]);
  });

  test("removes the tmp file when the step before the move fails", async () => {
    const maildir = path.join(root, "Maildir");
    let seen = "";
    const error = await deliverToMaildir(maildir, "x\r\n", {
      beforeMove: async (tmpPath) => {
        seen = await readFile(tmpPath, "utf8");
        throw new Error("stop");
      },
    }).catch((caught: unknown) => caught);
    expect(seen).toBe("x\r\n");
    expect(error).toBeInstanceOf(MaildirError);
    expect(await list(path.join(maildir, "tmp"))).toEqual([]);
    expect(await list(path.join(maildir, "new"))).toEqual([]);
  });

  test("reports a path it cannot create with the path and the errno code", async () => {
    await writeFile(path.join(root, "file"), "");
    const maildir = path.join(root, "file", "Maildir");
    const error = (await deliverToMaildir(maildir, "x").catch((caught: unknown) => caught)) as MaildirError;
    expect(error).toBeInstanceOf(MaildirError);
    expect(error.code).toBe("ENOTDIR");
    expect(error.step).toBe("mkdir");
    expect(error.message).toContain(maildir);
  });

  test("makes the folders again when they were removed after the first delivery", async () => {
    const maildir = path.join(root, "Maildir");
    await deliverToMaildir(maildir, "one\r\n");
    await rm(maildir, { recursive: true });
    const delivery = await deliverToMaildir(maildir, "two\r\n");
    expect(await readFile(delivery.path, "utf8")).toBe("two\r\n");
  });

  test("concurrent deliveries in one process get distinct files", async () => {
    const maildir = path.join(root, "Maildir");
    const bodies = Array.from({ length: 200 }, (_, index) => `message ${index}\r\n`);
    const deliveries = await Promise.all(bodies.map((body) => deliverToMaildir(maildir, body)));
    const names = await list(path.join(maildir, "new"));
    expect(names.length).toBe(200);
    for (const [index, delivery] of deliveries.entries()) {
      expect(await readFile(delivery.path, "utf8")).toBe(bodies[index]);
    }
  });

  test("concurrent first deliveries share the creation", async () => {
    const maildir = path.join(root, "deep", "er", "example.test", "alice", "Maildir");
    const order: string[] = [];
    await Promise.all([
      ensureMaildir(maildir).then(() => order.push("first")),
      ensureMaildir(maildir).then(() => order.push("second")),
    ]);
    // The second call resolves only once the first one's folders and fsyncs are done.
    expect(order).toEqual(["first", "second"]);
    expect((await stat(path.join(maildir, "new"))).isDirectory()).toBe(true);
  });

  test("first use removes abandoned tmp/ files", async () => {
    const maildir = path.join(root, "leftovers", "Maildir");
    const tmp = path.join(maildir, "tmp");
    await mkdir(tmp, { recursive: true });
    const exitedPid = spawnSync("true").pid!;
    const names = {
      deadWriter: `1700000000.M1P${exitedPid}Q1R00ff.host`,
      liveWriter: `1700000000.M1P${process.pid}Q1R00ff.host`,
      oldForeign: "1500000000.12345_1.other-mda",
      freshForeign: "1700000000.12345_2.other-mda",
    };
    for (const name of Object.values(names)) await writeFile(path.join(tmp, name), "partial");
    const old = new Date(Date.now() - 40 * 3600 * 1000);
    await utimes(path.join(tmp, names.oldForeign), old, old);

    await deliverToMaildir(maildir, "Subject: hi\r\n\r\nbody\r\n");
    await tmpCleanupsDone();
    const left = await readdir(tmp);
    expect(left).not.toContain(names.deadWriter);
    expect(left).not.toContain(names.oldForeign);
    expect(left).toContain(names.liveWriter);
    expect(left).toContain(names.freshForeign);
  });

  test("ensureMaildir keeps existing messages", async () => {
    const maildir = path.join(root, "Maildir");
    const delivery = await deliverToMaildir(maildir, "keep\r\n");
    await ensureMaildir(maildir);
    expect(await readFile(delivery.path, "utf8")).toBe("keep\r\n");
  });
});

test("concurrent deliveries share fsyncs of new/", async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), "maildir-group-"));
  try {
    const maildir = path.join(root, "Maildir");
    await ensureMaildir(maildir);
    const before = directoryFsyncCount();
    const count = 40;
    const deliveries = await Promise.all(
      Array.from({ length: count }, (_, index) => deliverToMaildir(maildir, [Buffer.from(`Subject: ${index}\r\n\r\nbody ${index}\r\n`)])),
    );
    const fsyncs = directoryFsyncCount() - before;
    expect(await readdir(path.join(maildir, "new"))).toHaveLength(count);
    expect(new Set(deliveries.map((delivery) => delivery.name)).size).toBe(count);
    // Every delivery waited for an fsync that started after its move, and
    // most of them shared one.
    expect(fsyncs).toBeGreaterThanOrEqual(1);
    expect(fsyncs).toBeLessThan(count / 2);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
