import { rm } from "node:fs/promises";
import { afterEach, expect, test } from "vitest";
import { makeServerDir, startDns, startMailroom, startRemoteMx, submit, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function deliverFour(mx: Record<string, unknown>) {
  const remote = await startRemoteMx({ dataDelay: 150 });
  cleanup.push(() => remote.close());
  const zone: Record<string, { MX?: [number, string][]; A?: string[] }> = { "mx.ok.test": { A: ["127.0.0.1"] } };
  for (const domain of ["a.test", "b.test"]) zone[domain] = { MX: [[10, "mx.ok.test"]] };
  const dns = await startDns(zone);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));

  const queueOnly = await startMailroom({ dir, dns, mx: { port: remote.port, deliver: false } });
  for (const to of ["1@a.test", "2@a.test", "3@b.test", "4@b.test"]) await submit(queueOnly, "alice@local.test", [to]);
  await queueOnly.stop();
  const server = await startMailroom({ dir, dns, mx: { port: remote.port, maxMessagesPerConnection: 1, ...mx } });
  cleanup.push(() => server.stop());
  await waitFor(() => remote.received.length === 4, "four deliveries");
  return remote;
}

test("perDomain limits connections per destination", async () => {
  const remote = await deliverFour({ concurrency: { total: 10, perDomain: 1 } });
  expect(remote.maxOpen).toBe(2);
  expect(remote.connections).toBe(4);
});

test("total limits all connections", async () => {
  const remote = await deliverFour({ concurrency: { total: 1, perDomain: 5 } });
  expect(remote.maxOpen).toBe(1);
});
