// Queue files damaged or renamed on disk: a record cut short is set aside
// and never sent, and a record whose file was renamed is delivered under
// its file name.
import { readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { pino } from "pino";
import { afterEach, expect, test } from "vitest";
import { TOKENS, type OutboundQueue } from "@mailroom/core";
import { QueueStore } from "../plugins/mx/src/store.js";
import { makeServerDir, startDns, startMailroom, startRemoteMx, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const ZONE = { "ok.test": { MX: [[10, "mx.ok.test"]] as [number, string][] }, "mx.ok.test": { A: ["127.0.0.1"] } };

/** Writes one queued message for `to` into the queue folder of `dir` before a server starts; returns its record id and file. */
async function queueBefore(dir: string, to: string, body: string): Promise<{ id: string; file: string }> {
  const writer = new QueueStore(path.join(dir, "queue"), pino({ level: "silent" }));
  await writer.init();
  const {
    records: [record],
  } = await writer.add([Buffer.from(body)], { sender: "alice@local.test", domains: new Map([["ok.test", [to]]]), now: Date.now() });
  return { id: record!.id, file: writer.activePath(record!.id) };
}

async function world() {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return { remote, dns, dir };
}

test("record cut short is never delivered", async () => {
  const { remote, dns, dir } = await world();
  const cut = await queueBefore(dir, "cut@ok.test", "Subject: report\r\n\r\nthe whole report\r\n");
  const whole = await queueBefore(dir, "whole@ok.test", "Subject: other\r\n\r\nfine\r\n");
  const bytes = await readFile(cut.file);
  await writeFile(cut.file, bytes.subarray(0, bytes.length - 10));

  const server = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => server.stop());
  await waitFor(() => remote.received.length === 1, "delivery of the whole record");
  expect(remote.received[0]!.to).toEqual(["whole@ok.test"]);
  const logged = await waitFor(() => server.logs.find((line) => line.msg === "damaged queue record set aside"), "the log line");
  expect(logged.id).toBe(cut.id);
  expect(logged.level).toBe(50);
  expect((await readdir(path.join(dir, "queue/corrupt"))).some((name) => name.startsWith(`${cut.id}.`))).toBe(true);
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  await waitFor(async () => (await queue.list()).length === 0, "an empty queue");
  expect(remote.received).toHaveLength(1);
  expect(whole.id).not.toBe(cut.id);
});

test("renamed record is delivered under its file name", async () => {
  const { remote, dns, dir } = await world();
  const record = await queueBefore(dir, "bob@ok.test", "Subject: moved\r\n\r\nbody\r\n");
  await rename(record.file, path.join(dir, "queue/active/handmade-0.msg"));

  const server = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => server.stop());
  await waitFor(() => remote.received.length === 1, "delivery");
  expect(remote.received[0]!.to).toEqual(["bob@ok.test"]);
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  await waitFor(async () => (await queue.list()).length === 0, "an empty queue");
  const delivered = server.logs.find((line) => line.msg === "delivered");
  expect(delivered?.id).toBe("handmade-0");
});

test("malformed state line fields are set aside", async () => {
  const { remote, dns, dir } = await world();
  const malformed = {
    "failed entry": (state: Record<string, unknown>) => ({ ...state, failed: [null] }),
    "failed without reply": (state: Record<string, unknown>) => ({ ...state, failed: [{ recipient: "gone@ok.test" }] }),
    "pending number": (state: Record<string, unknown>) => ({ ...state, pending: [123] }),
    "no message id": (state: Record<string, unknown>) => ({ ...state, messageId: undefined }),
    "next attempt past Date range": (state: Record<string, unknown>) => ({ ...state, nextAttemptAt: 1e300 }),
    "creation time past Date range": (state: Record<string, unknown>) => ({ ...state, createdAt: -8.64e15 - 1 }),
    "creation time a string": (state: Record<string, unknown>) => ({ ...state, createdAt: "2026-01-01" }),
    "bounce time past Date range": (state: Record<string, unknown>) => ({ ...state, bounceAttemptAt: 1e300 }),
    "first bounce time null": (state: Record<string, unknown>) => ({ ...state, bounceFirstAttemptAt: null }),
  };
  const ids: string[] = [];
  for (const [name, change] of Object.entries(malformed)) {
    const record = await queueBefore(dir, "bad@ok.test", `Subject: ${name}\r\n\r\nbody\r\n`);
    const text = await readFile(record.file, "utf8");
    const end = text.indexOf("\n");
    const state = JSON.parse(text.slice(0, end)) as Record<string, unknown>;
    await writeFile(record.file, `${JSON.stringify(change(state))}${text.slice(end)}`);
    ids.push(record.id);
  }
  await queueBefore(dir, "whole@ok.test", "Subject: other\r\n\r\nfine\r\n");

  const server = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => server.stop());
  await waitFor(() => remote.received.length === 1, "delivery of the whole record");
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  await waitFor(async () => (await queue.list()).length === 0, "an empty queue");

  expect(remote.received[0]!.to).toEqual(["whole@ok.test"]);
  const setAside = server.logs.filter((line) => line.msg === "unreadable queue record set aside").map((line) => line.id);
  expect(setAside.sort()).toEqual([...ids].sort());
  const corrupt = await readdir(path.join(dir, "queue/corrupt"));
  for (const id of ids) expect(corrupt.some((name) => name.startsWith(`${id}.`))).toBe(true);
  expect(await readdir(path.join(dir, "queue/claimed"))).toEqual([]);
  expect(server.logs.filter((line) => line.msg === "delivery run failed")).toEqual([]);
});
