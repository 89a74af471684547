import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";
import { SINK_PLUGIN } from "./fixtures/paths.js";


let dir: string;
let server: TestServer;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-metrics-"));
  server = await startTestServer(
    { server: { metrics: { listen: "127.0.0.1:0" } }, plugins: [{ use: SINK_PLUGIN }] },
    { dir },
  );
});

afterEach(async () => {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});

async function scrape(): Promise<string> {
  const { host, port } = server.server.metricsAddress!;
  const response = await fetch(`http://${host}:${port}/metrics`);
  expect(response.status).toBe(200);
  return response.text();
}

test("metrics count connections, replies, transactions and hooks", async () => {
  const client = await server.connect();
  await client.send({ from: "a@sender.test", to: ["bob@local.test"], message: "Subject: x\r\n\r\nbody\r\n" });
  expect((await client.command("RCPT TO:<nobody@local.test>")).code).toBe(503);
  await client.command("MAIL FROM:<a@sender.test>");
  expect((await client.command("RCPT TO:<nobody@local.test>")).code).toBe(550);

  const text = await scrape();
  expect(text).toMatch(/^mailroom_connections_total\{result="admitted"\} 1$/m);
  expect(text).toMatch(/^mailroom_connections_active 1$/m);
  expect(text).toMatch(/^mailroom_transactions_total\{outcome="accepted"\} 1$/m);
  expect(text).toMatch(/^mailroom_replies_total\{class="5xx"\} 2$/m);
  expect(text).toMatch(/^mailroom_hook_duration_seconds_count\{plugin="sink",hook="rcpt"\} 2$/m);
  expect(text).toMatch(/^mailroom_queue_messages 0$/m);
  client.close();
});

test("hook duration histogram has cumulative buckets", async () => {
  const client = await server.connect();
  await client.send({ from: "a@sender.test", to: ["bob@local.test", "carol@local.test"], message: "Subject: x\r\n\r\nbody\r\n" });
  client.close();
  const text = await scrape();
  expect(text).toMatch(/^# TYPE mailroom_hook_duration_seconds histogram$/m);
  const buckets = [...text.matchAll(/^mailroom_hook_duration_seconds_bucket\{le="([^"]+)",plugin="sink",hook="rcpt"\} (\d+)$/gm)];
  expect(buckets.map((match) => match[1])).toEqual(["0.0005", "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "30", "+Inf"]);
  const counts = buckets.map((match) => Number(match[2]));
  expect(counts).toEqual([...counts].sort((a, b) => a - b));
  expect(counts.at(-1)).toBe(2);
  expect(text).toMatch(/^mailroom_hook_duration_seconds_sum\{plugin="sink",hook="rcpt"\} \d/m);
});

test("metrics endpoint answers 404 elsewhere", async () => {
  const { host, port } = server.server.metricsAddress!;
  const response = await fetch(`http://${host}:${port}/other`);
  expect(response.status).toBe(404);
});

test("HEAD /metrics answers like GET without a body", async () => {
  const { host, port } = server.server.metricsAddress!;
  const get = await fetch(`http://${host}:${port}/metrics`);
  const head = await fetch(`http://${host}:${port}/metrics`, { method: "HEAD" });
  expect(head.status).toBe(200);
  expect(head.headers.get("content-type")).toBe(get.headers.get("content-type"));
  expect(Number(head.headers.get("content-length"))).toBeGreaterThan(0);
  expect(await head.text()).toBe("");
});

test("other methods on /metrics get 405 with Allow", async () => {
  const { host, port } = server.server.metricsAddress!;
  for (const method of ["POST", "PUT", "DELETE", "OPTIONS"]) {
    const response = await fetch(`http://${host}:${port}/metrics`, { method });
    expect(response.status, method).toBe(405);
    expect(response.headers.get("allow"), method).toBe("GET, HEAD");
  }
});
