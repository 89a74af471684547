import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startTestServer, type TestServer } from "@mailroom/testing";
import nodemailer from "nodemailer";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

// Records, at data_post, which files the spool folder holds, so each message
// shows whether it was kept in memory or went to a spool file.
const SPOOL_WATCH = `
import { appendFileSync, readdirSync } from "node:fs";
import { definePlugin, z } from "@mailroom/core";

export default definePlugin({
  name: "spool-watch",
  options: z.strictObject({ spoolDir: z.string(), log: z.string() }),
  setup(ctx) {
    return {
      data_post: ({ message }) => {
        const entry = { subject: message.headers.getFirst("subject"), files: readdirSync(ctx.options.spoolDir).length };
        appendFileSync(ctx.options.log, JSON.stringify(entry) + "\\n");
        return undefined;
      },
    };
  },
});
`;

let dir: string;
let spoolDir: string;
let log: string;
let server: TestServer;
const inbox = () => path.join(dir, "mail/example.test/alice/Maildir/new");

async function start(memorySpool: { perMessage: string; total: string }): Promise<void> {
  dir = await mkdtemp(path.join(os.tmpdir(), "spool-memory-"));
  spoolDir = path.join(dir, "spool");
  log = path.join(dir, "spool-watch.log");
  await mkdir(spoolDir);
  await writeFile(path.join(dir, "spool-watch.ts"), SPOOL_WATCH);
  server = await startTestServer(
    {
      server: { hostname: "mx.example.test", spoolDir, memorySpool },
      plugins: [
        { use: "./spool-watch.ts", with: { spoolDir, log } },
        {
          use: "@mailroom/plugin-maildir",
          with: { root: "./mail", hostname: "mx.example.test", domains: { "example.test": { mailboxes: ["alice"] } } },
        },
      ],
    },
    { dir },
  );
}

async function stop(): Promise<void> {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
}

async function deliver(subject: string, body: string): Promise<string> {
  const before = new Set(await readdir(inbox()).catch(() => [] as string[]));
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({ from: "s@sender.example", to: "alice@example.test", subject, text: body });
  } finally {
    transport.close();
  }
  const added = (await readdir(inbox())).filter((name) => !before.has(name));
  expect(added).toHaveLength(1);
  return readFile(path.join(inbox(), added[0]!), "utf8");
}

async function watched(): Promise<{ subject: string; files: number }[]> {
  const text = await readFile(log, "utf8");
  return text.trim().split("\n").map((line) => JSON.parse(line) as { subject: string; files: number });
}

describe("messages kept in memory while they arrive", () => {
  beforeAll(() => start({ perMessage: "8KB", total: "1MB" }));
  afterAll(stop);

  test("a small message never touches the spool folder and arrives whole", async () => {
    const body = "short line\n".repeat(50);
    const stored = await deliver("small", body);
    expect(stored).toContain("Subject: small");
    expect(stored.replace(/\r\n/g, "\n")).toContain(body);
    expect((await watched()).find((entry) => entry.subject === "small")?.files).toBe(0);
  });

  test("message over limit uses a spool file", async () => {
    const body = Array.from({ length: 2000 }, (_, line) => `line ${line} ${"x".repeat(60)}\n`).join("");
    const stored = await deliver("large", body);
    expect(stored.replace(/\r\n/g, "\n")).toContain(body);
    expect((await watched()).find((entry) => entry.subject === "large")?.files).toBe(1);
    expect(await readdir(spoolDir)).toEqual([]);
  });

});

describe("the memory shared by all sessions", () => {
  beforeAll(() => start({ perMessage: "8KB", total: "16KB" }));
  afterAll(stop);

  test("concurrent messages past the shared budget go to spool files, and all arrive", async () => {
    // Forty messages of about 6 KB at once: each fits the per-message limit,
    // but only two fit the 16 KB budget together.
    const bodies = Array.from({ length: 40 }, (_, n) => `message ${n} ${"y".repeat(50)}\n`.repeat(100));
    const results = await Promise.all(
      bodies.map(async (body, n) => {
        const transport = nodemailer.createTransport({ host: "127.0.0.1", port: server.port, secure: false, ignoreTLS: true });
        try {
          return await transport.sendMail({ from: "s@sender.example", to: "alice@example.test", subject: `batch ${n}`, text: body });
        } finally {
          transport.close();
        }
      }),
    );
    expect(results.every((info) => info.response.startsWith("250"))).toBe(true);
    const texts = await Promise.all((await readdir(inbox())).map((name) => readFile(path.join(inbox(), name), "utf8")));
    for (const [n, body] of bodies.entries()) {
      expect(texts.some((text) => text.replace(/\r\n/g, "\n").includes(body)), `batch ${n}`).toBe(true);
    }
    expect((await watched()).some((entry) => entry.files > 0)).toBe(true);
    expect(await readdir(spoolDir)).toEqual([]);
  });
});
