import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { startTestServer, type TestServer } from "@mailroom/testing";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { deliverToMaildir } from "@mailroom/plugin-maildir";
import { startChild, type Child } from "../plugins/maildir/test-support/children.js";
import { readWithPython } from "../plugins/maildir/test-support/read-maildir.js";

const config = (root: string) => ({
  server: { hostname: "mx.example.test" },
  plugins: [
    {
      use: "@mailroom/plugin-maildir",
      with: { root, domains: { "local.example": { mailboxes: ["bob", "broken"] } } },
    },
  ],
});

/** Collects the JSON log lines of a server. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: "info" }, stream), lines };
}

async function deliver(server: TestServer, body: string | Buffer, to = "bob@local.example") {
  const client = await server.connect();
  await client.command("EHLO client.example");
  await client.command("MAIL FROM:<s@sender.example>");
  const rcpt = await client.command(`RCPT TO:<${to}>`);
  expect(rcpt.code).toBe(250);
  const reply = await client.data(body);
  const noop = await client.command("NOOP");
  client.close();
  return { reply, noop };
}

describe("a full file system", () => {
  let mount: string | undefined;
  let skip = "";
  let server: TestServer | undefined;
  const log = capturedLogger();

  beforeAll(async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "maildir-full-"));
    mount = path.join(dir, "mail");
    mkdirSync(mount);
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], { stdio: "pipe" });
    } catch (error) {
      skip = `cannot mount a tmpfs here (${(error as Error).message.split("\n")[0]}); the disk-full test needs root`;
      return;
    }
    server = await startTestServer(config(mount), { dir, logger: log.logger });
  });

  afterAll(async () => {
    await server?.stop();
    if (mount && !skip) execFileSync("umount", [mount]);
    if (mount) await rm(path.dirname(mount), { recursive: true, force: true });
  });

  test("2 MiB message gets 452 4.3.1, no partial file", async (context) => {
    if (skip) {
      console.warn(skip);
      context.skip();
    }
    const maildir = path.join(mount!, "local.example", "bob", "Maildir");
    const first = await deliver(server!, "Subject: small\r\n\r\nfits\r\n");
    expect(first.reply.code).toBe(250);
    const before = readdirSync(path.join(maildir, "new"));
    expect(before).toHaveLength(1);

    const line = `${"y".repeat(998)}\r\n`;
    const big = `Subject: big\r\n\r\n${line.repeat(Math.ceil((2 * 1024 * 1024) / line.length))}`;
    const { reply, noop } = await deliver(server!, big);
    expect([reply.code, reply.enhanced]).toEqual([452, "4.3.1"]);
    expect(noop.code).toBe(250);
    expect(readdirSync(path.join(maildir, "tmp"))).toEqual([]);
    expect(readdirSync(path.join(maildir, "new"))).toEqual(before);
    expect((await readWithPython(maildir)).map((message) => message.key)).toEqual(before);

    const failure = log.lines.find((entry) => entry.msg === "maildir delivery failed");
    expect(failure).toMatchObject({ code: "ENOSPC", step: "write" });
    expect(String(failure?.path)).toContain(path.join(maildir, "tmp"));
    expect(String(failure?.txn)).toMatch(/\S/);

    // The space of the removed partial file is free again.
    expect((await deliver(server!, "Subject: after\r\n\r\nfits again\r\n")).reply.code).toBe(250);
  });
});

describe("a mailbox that cannot be written", () => {
  test("write error gets 451 4.3.0 and a log line", async () => {
    const log = capturedLogger();
    const dir = await mkdtemp(path.join(os.tmpdir(), "maildir-broken-"));
    // A file where the mailbox folder should be: mkdir fails with ENOTDIR.
    await mkdir(path.join(dir, "mail", "local.example"), { recursive: true });
    await writeFile(path.join(dir, "mail", "local.example", "broken"), "not a folder");
    const server = await startTestServer(config("./mail"), { dir, logger: log.logger });
    try {
      const { reply, noop } = await deliver(server, "Subject: x\r\n\r\nx\r\n", "broken@local.example");
      expect([reply.code, reply.enhanced]).toEqual([451, "4.3.0"]);
      expect(noop.code).toBe(250);
      const failure = log.lines.find((entry) => entry.msg === "maildir delivery failed");
      expect(failure).toMatchObject({ code: "ENOTDIR", step: "mkdir" });
      expect(String(failure?.path)).toContain(path.join(dir, "mail", "local.example", "broken"));
      expect(typeof failure?.txn).toBe("string");
    } finally {
      await server.stop();
    }
  });
});

describe("a writer killed before the move into new/", () => {
  let child: Child | undefined;
  let root: string | undefined;
  afterEach(async () => {
    if (child && child.process.exitCode === null) child.process.kill("SIGKILL");
    await child?.exited;
    if (root) await rm(root, { recursive: true, force: true });
  });

  test("killed writer leaves new/ empty", async () => {
    root = await mkdtemp(path.join(os.tmpdir(), "maildir-killed-"));
    const maildir = path.join(root, "local.example", "bob", "Maildir");
    child = startChild([maildir, "1", "killed", "pause"]);
    await child.line("ready");
    child.process.stdin!.write("go\n");
    const tmpPath = (await child.line("paused ")).slice("paused ".length);

    // The whole message is written and fsync'd in tmp/ at this point.
    expect(path.dirname(tmpPath)).toBe(path.join(maildir, "tmp"));
    expect(await readFile(tmpPath, "latin1")).toContain("killed 0\r\n");
    child.process.kill("SIGKILL");
    expect((await child.exited).code).toBe("SIGKILL");

    expect(await readdir(path.join(maildir, "new"))).toEqual([]);
    expect(await readdir(path.join(maildir, "cur"))).toEqual([]);
    expect(await readWithPython(maildir)).toEqual([]);

    // The leftover in tmp/ does not disturb the next delivery or the reader.
    const next = await deliverToMaildir(maildir, "Subject: next\r\n\r\nx\r\n");
    expect(await readdir(path.join(maildir, "new"))).toEqual([next.name]);
    expect((await readWithPython(maildir)).map((message) => message.key)).toEqual([next.name]);
  });
});
