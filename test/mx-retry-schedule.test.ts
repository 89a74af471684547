// The retry schedule: each delay is at least one second, so a destination
// that keeps deferring is never retried in a loop, and the last delay
// repeats once the schedule is used up.
import { spawnSync } from "node:child_process";
import { rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, expect, test } from "vitest";
import { makeServerDir, MX_PLUGIN, startDns, startMailroom, startRemoteMx, submit, TestClock, waitFor, type Zone } from "./mx-kit.js";

const BIN = fileURLToPath(new URL("../packages/cli/bin/mailroom.js", import.meta.url));

const ZONE: Zone = {
  "later.test": { MX: [[10, "mx.later.test"]] },
  "mx.later.test": { A: ["127.0.0.1"] },
};

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

test.each([
  [[0], 0, 0],
  [["5m", "0s"], 1, '"0s"'],
  [["5m", "10m", 500], 2, "500"],
])("schedule %j does not start", async (retry, index, received) => {
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const start = startMailroom({ dir, dns, mx: { retry } });
  await expect(start).rejects.toThrow(`with.retry[${index}]: expected a duration of at least 1000 ms, received ${received}`);
});

test("deferrals follow the schedule, then its last delay", async () => {
  const clock = new TestClock(Date.UTC(2026, 0, 5, 9, 0, 0));
  const attemptTimes: number[] = [];
  const remote = await startRemoteMx({
    rcpt: () => {
      attemptTimes.push(clock.now());
      return { code: 451, message: "4.7.1 try again later" };
    },
  });
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, clock, mx: { port: remote.port, retry: ["1s", "2s"], maxQueueLifetime: "1h" } });
  cleanup.push(() => server.stop());

  const start = clock.now();
  expect(await submit(server, "alice@local.test", ["bob@later.test"])).toEqual([250, 250, 250, 250]);
  const deferrals = () => server.logs.filter((line) => line.msg === "delivery deferred").length;
  await waitFor(() => deferrals() === 1, "the first deferral");

  // One millisecond before each due time nothing is sent; at the due time the next attempt is.
  for (const [index, delay] of [1000, 2000, 2000, 2000].entries()) {
    clock.advance(delay - 1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(attemptTimes).toHaveLength(index + 1);
    clock.advance(1);
    await waitFor(() => deferrals() === index + 2, `deferral ${index + 2}`);
  }
  expect(attemptTimes.map((time) => time - start)).toEqual([0, 1000, 3000, 5000, 7000]);

  // With the clock standing still, no further attempt is made.
  await new Promise((resolve) => setTimeout(resolve, 500));
  expect(attemptTimes).toHaveLength(5);
});

test("queue retry makes a running server deliver at once", async () => {
  let accept = false;
  const remote = await startRemoteMx({
    rcpt: () => (accept ? undefined : { code: 451, message: "4.7.1 try again later" }),
  });
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  // Neither the retry schedule nor the queue scan would try again within the test.
  const server = await startMailroom({ dir, dns, mx: { port: remote.port, retry: ["1h"], pollInterval: "1h" } });
  cleanup.push(() => server.stop());

  expect(await submit(server, "alice@local.test", ["bob@later.test"])).toEqual([250, 250, 250, 250]);
  await waitFor(() => server.logs.some((line) => line.msg === "delivery deferred"), "the deferral");
  accept = true;

  // The command line, as an administrator runs it, on a config naming the same queue.
  const config = path.join(dir, "cli.yaml");
  await writeFile(config, `plugins:\n  - use: ${JSON.stringify(MX_PLUGIN)}\n    with: { queueDir: ./queue }\n`);
  const retry = spawnSync(process.execPath, [BIN, "queue", "retry", "--all", "--config", config], { encoding: "utf8" });
  expect(retry.stderr).toBe("");
  expect(retry.stdout).toBe("1 record due now\n");

  await waitFor(() => remote.received.length === 1, "the delivery after queue retry", 5_000);
});
