import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { container, TOKENS, type OutboundQueue, type QueuedMessage } from "@mailroom/core";
import { startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test, vi } from "vitest";
import { SINK_PLUGIN } from "./fixtures/paths.js";

const MX_PLUGIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../plugins/mx/src/index.ts");

let dir: string;
let server: TestServer | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-metrics-queue-"));
});

afterEach(async () => {
  vi.useRealTimers();
  await server?.stop();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

/** An outbound queue in memory that counts the calls of list(). */
class CountingQueue implements OutboundQueue {
  entries: QueuedMessage[] = [];
  lists = 0;
  failure: Error | undefined;

  list(): Promise<QueuedMessage[]> {
    this.lists += 1;
    if (this.failure) return Promise.reject(this.failure);
    return Promise.resolve(this.entries);
  }

  get(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  retry(): Promise<boolean> {
    return Promise.resolve(false);
  }

  remove(): Promise<boolean> {
    return Promise.resolve(false);
  }
}

function entries(count: number, createdAt: (index: number) => number): QueuedMessage[] {
  return Array.from({ length: count }, (_, index) => ({
    id: `m${index}-0`,
    sender: "alice@sender.test",
    domain: "far.test",
    recipients: ["bob@far.test"],
    attempts: 1,
    createdAt: createdAt(index),
    nextAttemptAt: createdAt(index) + 3_600_000,
  }));
}

/** Starts a server with metrics and the sink plugin, with `queue` registered as the outbound queue. */
async function startWithQueue(queue: OutboundQueue): Promise<TestServer> {
  const parent = container.createChildContainer();
  parent.register(TOKENS.OutboundQueue, { useValue: queue });
  return startTestServer(
    { server: { metrics: { listen: "127.0.0.1:0" } }, plugins: [{ use: SINK_PLUGIN }] },
    { dir, container: parent },
  );
}

async function scrape(target: TestServer): Promise<{ status: number; text: string }> {
  const { host, port } = target.server.metricsAddress!;
  const response = await fetch(`http://${host}:${port}/metrics`);
  return { status: response.status, text: await response.text() };
}

function gauge(text: string, name: string): number {
  const match = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  expect(match, `${name} in the scrape`).not.toBeNull();
  return Number(match![1]);
}

test("queue gauges handle 200,000 records", async () => {
  const queue = new CountingQueue();
  const now = Date.now();
  // The oldest record is in the middle, so neither end of the list gives it.
  queue.entries = entries(200_000, (index) => (index === 100_000 ? now - 7_200_000 : now - 60_000));
  server = await startWithQueue(queue);

  const { status, text } = await scrape(server);
  expect(status).toBe(200);
  expect(gauge(text, "mailroom_queue_messages")).toBe(200_000);
  const age = gauge(text, "mailroom_queue_oldest_age_seconds");
  expect(age).toBeGreaterThanOrEqual(7200);
  expect(age).toBeLessThan(7260);
  expect(queue.lists).toBe(1);
});

test("queue gauges of an empty queue are 0", async () => {
  const queue = new CountingQueue();
  server = await startWithQueue(queue);
  const { text } = await scrape(server);
  expect(gauge(text, "mailroom_queue_messages")).toBe(0);
  expect(gauge(text, "mailroom_queue_oldest_age_seconds")).toBe(0);
});

test("scrapes share one queue reading", async () => {
  const queue = new CountingQueue();
  queue.entries = entries(2, () => Date.now());
  server = await startWithQueue(queue);

  const first = await Promise.all([scrape(server), scrape(server), scrape(server)]);
  expect(first.map((result) => result.status)).toEqual([200, 200, 200]);
  expect(queue.lists).toBe(1);
  expect(gauge((await scrape(server)).text, "mailroom_queue_messages")).toBe(2);
  expect(queue.lists).toBe(1);
});

test("stale queue reading is refreshed in background", async () => {
  const queue = new CountingQueue();
  queue.entries = entries(2, () => Date.now());
  server = await startWithQueue(queue);
  expect(gauge((await scrape(server)).text, "mailroom_queue_messages")).toBe(2);

  queue.entries = entries(3, () => Date.now());
  // Only Date is faked, so the sockets and timers of the server run as usual.
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(Date.now() + 6_000);
  // The scrape that finds the reading stale still gets it and starts the next one.
  expect(gauge((await scrape(server)).text, "mailroom_queue_messages")).toBe(2);
  expect(queue.lists).toBe(2);
  expect(gauge((await scrape(server)).text, "mailroom_queue_messages")).toBe(3);
  expect(queue.lists).toBe(2);
});

test("failed queue reading fails the next scrape", async () => {
  const queue = new CountingQueue();
  queue.entries = entries(1, () => Date.now());
  server = await startWithQueue(queue);
  expect((await scrape(server)).status).toBe(200);

  queue.failure = new Error("queue folder unreadable");
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(Date.now() + 6_000);
  // This scrape still shows the last reading; the one it starts fails.
  expect((await scrape(server)).status).toBe(200);
  expect(queue.lists).toBe(2);
  const failed = await scrape(server);
  expect(failed.status).toBe(500);
  expect(queue.lists).toBe(3);

  queue.failure = undefined;
  const recovered = await scrape(server);
  expect(recovered.status).toBe(200);
  expect(gauge(recovered.text, "mailroom_queue_messages")).toBe(1);
});

test("queue messages gauge counts one record per domain", async () => {
  server = await startTestServer(
    {
      server: { metrics: { listen: "127.0.0.1:0" } },
      plugins: [
        { use: "@mailroom/plugin-relay", with: { trustedNetworks: ["127.0.0.1"] } },
        { use: MX_PLUGIN, with: { queueDir: "./queue", deliver: false } },
      ],
    },
    { dir },
  );
  const client = await server.connect();
  const replies = await client.send({
    from: "alice@sender.test",
    to: ["bob@one.test", "carol@one.test", "dave@two.test"],
    message: "Subject: x\r\n\r\nbody\r\n",
  });
  expect(replies.at(-1)!.code).toBe(250);
  client.close();

  const { status, text } = await scrape(server);
  expect(status).toBe(200);
  expect(gauge(text, "mailroom_queue_messages")).toBe(2);
  expect(gauge(text, "mailroom_queue_oldest_age_seconds")).toBeLessThan(60);
  expect(text).toMatch(/^# HELP mailroom_queue_messages Records in the outbound queue, one per message and destination domain$/m);
});
