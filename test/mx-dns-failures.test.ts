import { rm } from "node:fs/promises";
import { afterEach, expect, test } from "vitest";
import { TOKENS, type OutboundQueue } from "@mailroom/core";
import {
  makeServerDir,
  parseMultipart,
  startDns,
  startMailroom,
  statusGroups,
  submit,
  TestClock,
  waitFor,
  type Mailroom,
} from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const MINUTE = 60_000;

function bounceReports(messages: { data: string }[]) {
  return messages.map((message) => {
    const report = parseMultipart(message.data.slice(message.data.indexOf("\r\nFrom:") + 2));
    return statusGroups(report.parts[1]!.body).slice(1);
  });
}

async function settled(server: Mailroom, attempts: number) {
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  return waitFor(async () => {
    const entries = (await queue.list()) as (Awaited<ReturnType<OutboundQueue["list"]>>[number] & { delivering: boolean })[];
    return entries.length === 3 && entries.every((entry) => !entry.delivering && entry.attempts === attempts) && entries;
  }, `attempt ${attempts}`);
}

test("temporary DNS failures defer, permanent ones bounce", async () => {
  const dns = await startDns({
    "servfail.test": "servfail",
    "timeout.test": "timeout",
    "refused.test": "refused",
    "mxhostnx.test": { MX: [[10, "gone.mxhostnx.test"]] },
  });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const clock = new TestClock();
  const start = clock.now();
  const server = await startMailroom({ dir, dns, clock, mx: { maxQueueLifetime: "1h", retry: ["5m", "10m", "30m"] } });
  cleanup.push(() => server.stop());

  const recipients = ["u@servfail.test", "u@timeout.test", "u@refused.test", "u@nx.test", "u@mxhostnx.test"];
  const codes = await submit(server, "alice@local.test", recipients);
  expect(codes.at(-1)).toBe(250);

  // The permanent failures come back at once, in one bounce.
  const first = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "first bounce");
  const [permanent] = bounceReports(first);
  expect(permanent!.map((group) => [group["final-recipient"], group.status]).sort()).toEqual([
    ["rfc822; u@mxhostnx.test", "5.4.4"],
    ["rfc822; u@nx.test", "5.1.2"],
  ]);
  // No SMTP server gave these replies, so they are not labelled smtp and name no Remote-MTA.
  const nxdomain = permanent!.find((group) => group["final-recipient"] === "rfc822; u@nx.test")!;
  expect(nxdomain["diagnostic-code"]).toBe("X-Mailroom; 550 5.1.2 Domain nx.test does not exist");
  expect(permanent!.every((group) => group["remote-mta"] === undefined)).toBe(true);

  let entries = await settled(server, 1);
  expect(entries.map((entry) => entry.domain).sort()).toEqual(["refused.test", "servfail.test", "timeout.test"]);
  expect(entries.every((entry) => entry.nextAttemptAt === start + 5 * MINUTE)).toBe(true);
  expect(entries.every((entry) => /4\.4\.3/.test(entry.lastError ?? ""))).toBe(true);

  // Retries follow the schedule: 5m, 10m, then 30m repeating.
  clock.advance(5 * MINUTE);
  entries = await settled(server, 2);
  expect(entries.every((entry) => entry.nextAttemptAt === start + 15 * MINUTE)).toBe(true);
  clock.advance(10 * MINUTE);
  entries = await settled(server, 3);
  expect(entries.every((entry) => entry.nextAttemptAt === start + 45 * MINUTE)).toBe(true);
  clock.advance(30 * MINUTE);
  entries = await settled(server, 4);
  // The last attempt is at the end of the lifetime, not after it.
  expect(entries.every((entry) => entry.nextAttemptAt === start + 60 * MINUTE)).toBe(true);
  expect(await server.local()).toHaveLength(1);

  // A timeout or SERVFAIL never falls back to address records of the domain.
  const fallbacks = dns.queries.filter((query) => query.type !== "MX" && /^(timeout|servfail|refused)\.test$/.test(query.name));
  expect(fallbacks).toEqual([]);

  clock.advance(15 * MINUTE);
  const all = await waitFor(async () => {
    const local = await server.local();
    return local.length === 2 && local;
  }, "bounce at the end of the queue lifetime");
  const [, expired] = bounceReports(all);
  expect(expired!.map((group) => [group["final-recipient"], group.action, group.status]).sort()).toEqual([
    ["rfc822; u@refused.test", "failed", "4.4.3"],
    ["rfc822; u@servfail.test", "failed", "4.4.3"],
    ["rfc822; u@timeout.test", "failed", "4.4.3"],
  ]);
  const servfail = expired!.find((group) => group["final-recipient"] === "rfc822; u@servfail.test")!;
  expect(servfail["diagnostic-code"]).toMatch(/^X-Mailroom; 451 4\.4\.3 MX lookup for servfail\.test failed temporarily: .* \(gave up after 60 minutes\)$/);
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  await waitFor(async () => (await queue.list()).length === 0, "empty queue");
});
