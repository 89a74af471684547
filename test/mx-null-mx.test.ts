import { rm } from "node:fs/promises";
import { afterEach, expect, test } from "vitest";
import { TOKENS, type OutboundQueue } from "@mailroom/core";
import { makeServerDir, parseMultipart, startDns, startMailroom, startRemoteMx, statusGroups, submit, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

test("null MX bounces at once across a restart", async () => {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const dns = await startDns({
    "nullmx.test": { MX: [[0, ""]] },
    "nullmx10.test": { MX: [[10, ""]] },
    "ok.test": { MX: [[10, "mx.ok.test"]] },
    "mx.ok.test": { A: ["127.0.0.1"] },
  });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));

  // The first server only queues; the restarted one delivers.
  const first = await startMailroom({ dir, dns, mx: { port: remote.port, deliver: false } });
  const codes = await submit(first, "alice@local.test", ["a@nullmx.test", "b@nullmx10.test", "c@ok.test"]);
  expect(codes).toEqual([250, 250, 250, 250, 250, 250]);
  const queued = await first.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue).list();
  expect(queued.map((entry) => entry.domain).sort()).toEqual(["nullmx.test", "nullmx10.test", "ok.test"]);
  await first.stop();

  const second = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => second.stop());
  const bounces = await waitFor(async () => {
    const local = await second.local();
    return local.length > 0 && local;
  }, "bounce");
  await waitFor(() => remote.received.length === 1, "delivery to ok.test");
  const queue = second.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  await waitFor(async () => (await queue.list()).length === 0, "empty queue");

  expect(remote.received[0]!.to).toEqual(["c@ok.test"]);
  expect(remote.connections).toBe(1);
  // Nothing looked up an address for the null MX domains: no connection could be tried.
  const addressQueries = dns.queries.filter((query) => query.type === "A" || query.type === "AAAA");
  expect(addressQueries.map((query) => query.name)).toEqual(expect.arrayContaining(["mx.ok.test"]));
  expect(addressQueries.some((query) => query.name.includes("nullmx"))).toBe(false);

  expect(bounces).toHaveLength(1);
  expect(bounces[0]!.to).toEqual(["alice@local.test"]);
  const report = parseMultipart(bounces[0]!.data.slice(bounces[0]!.data.indexOf("\r\nFrom:") + 2));
  const groups = statusGroups(report.parts[1]!.body);
  expect(groups.slice(1).map((group) => [group["final-recipient"], group.status])).toEqual(
    expect.arrayContaining([
      ["rfc822; a@nullmx.test", "5.1.10"],
      ["rfc822; b@nullmx10.test", "5.1.10"],
    ]),
  );
  // The 556 comes from the DNS lookup, not from an SMTP server.
  expect(groups.slice(1).every((group) => group["diagnostic-code"]!.startsWith("X-Mailroom; 556 5.1.10"))).toBe(true);
  expect(groups.slice(1).every((group) => group["remote-mta"] === undefined)).toBe(true);
  await second.stop();

  // A further restart finds nothing to retry and sends nothing more.
  const third = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => third.stop());
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(await third.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue).list()).toEqual([]);
  expect(await third.local()).toHaveLength(1);
  expect(remote.received).toHaveLength(1);
});
