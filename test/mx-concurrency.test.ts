import { readdir, rm } from "node:fs/promises";
import path from "node:path";
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

async function oneDomainServer(mx: Record<string, unknown>, remoteOptions: Parameters<typeof startRemoteMx>[0] = {}) {
  const remote = await startRemoteMx(remoteOptions);
  cleanup.push(() => remote.close());
  const dns = await startDns({ "ok.test": { MX: [[10, "mx.ok.test"]] }, "mx.ok.test": { A: ["127.0.0.1"] } });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port, ...mx } });
  return { remote, dns, dir, server };
}

test("new messages join an open connection", async () => {
  const { remote, server } = await oneDomainServer({}, { dataDelay: 100 });
  cleanup.push(() => server.stop());
  for (const to of ["1@ok.test", "2@ok.test", "3@ok.test"]) {
    expect((await submit(server, "alice@local.test", [to])).at(-1)).toBe(250);
  }
  await waitFor(() => remote.received.length === 3, "three deliveries");
  expect(remote.connections).toBe(1);
  expect(remote.received.map((message) => message.to[0])).toEqual(["1@ok.test", "2@ok.test", "3@ok.test"]);
});

test("stop puts waiting records back", async () => {
  const { remote, dns, dir, server } = await oneDomainServer({ concurrency: { total: 1, perDomain: 1 } }, { dataDelay: 500 });
  for (const to of ["1@ok.test", "2@ok.test", "3@ok.test"]) {
    expect((await submit(server, "alice@local.test", [to])).at(-1)).toBe(250);
  }
  // The first message is under way; the others wait for the connection.
  await server.stop();
  expect(remote.received.map((message) => message.to[0])).toEqual(["1@ok.test"]);
  expect(await readdir(path.join(dir, "queue/claimed"))).toEqual([]);
  expect((await readdir(path.join(dir, "queue/active"))).filter((name) => name.endsWith(".msg"))).toHaveLength(2);

  const again = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => again.stop());
  await waitFor(() => remote.received.length === 3, "the records put back");
  expect(remote.received.map((message) => message.to[0]).sort()).toEqual(["1@ok.test", "2@ok.test", "3@ok.test"]);
});

test("slow remote gets a second connection", async () => {
  const { remote, server } = await oneDomainServer({}, { dataDelay: 2500 });
  cleanup.push(() => server.stop());
  for (const to of ["1@ok.test", "2@ok.test", "3@ok.test"]) {
    expect((await submit(server, "alice@local.test", [to])).at(-1)).toBe(250);
  }
  // The first connection is busy for 2.5 s with message 1. Once messages 2
  // and 3 have waited a second, a second connection opens.
  await waitFor(() => remote.received.length === 3, "three deliveries");
  expect(remote.maxOpen).toBe(2);
  expect(remote.connections).toBe(2);
  expect(new Set(remote.received.map((message) => message.connection)).size).toBe(2);
});

test("fast remote keeps one connection", async () => {
  const { remote, server } = await oneDomainServer({}, { dataDelay: 50 });
  cleanup.push(() => server.stop());
  for (let index = 0; index < 10; index++) {
    expect((await submit(server, "alice@local.test", [`${index}@ok.test`])).at(-1)).toBe(250);
  }
  await waitFor(() => remote.received.length === 10, "ten deliveries");
  expect(remote.connections).toBe(1);
});
