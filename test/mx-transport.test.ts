import { rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { TOKENS, type OutboundQueue, type UserDirectory } from "@mailroom/core";
import {
  makeServerDir,
  startDns,
  startMailroom,
  startRemoteMx,
  startSilentServer,
  submit,
  waitFor,
  type Zone,
} from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const ZONE: Zone = { "ok.test": { MX: [[10, "mx.ok.test"]] }, "mx.ok.test": { A: ["127.0.0.1"] } };

async function world(zone: Zone, port: number, mx: Record<string, unknown> = {}) {
  const dns = await startDns(zone);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port, ...mx } });
  cleanup.push(() => server.stop());
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  return { dns, server, queue };
}

test("STARTTLS used without certificate checks", async () => {
  const remote = await startRemoteMx({ tls: true });
  cleanup.push(() => remote.close());
  const { server } = await world(ZONE, remote.port);
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  await waitFor(() => remote.received.length === 1, "delivery");
  expect(remote.received[0]!.secure).toBe(true);
});

test("failed TLS handshake retried in plaintext", async () => {
  const remote = await startRemoteMx({ brokenTls: true });
  cleanup.push(() => remote.close());
  const { server } = await world(ZONE, remote.port);
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  await waitFor(() => remote.received.length === 1, "delivery");
  expect(remote.received[0]!.secure).toBe(false);
  expect(remote.connections).toBe(2);
});

test("requireFor domain deferred without verified TLS", async () => {
  const remote = await startRemoteMx({ tls: true });
  cleanup.push(() => remote.close());
  const { queue, server } = await world(ZONE, remote.port, { tls: { requireFor: ["ok.test"] } });
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  const [entry] = await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && entries;
  }, "deferral");
  expect(entry!.lastError).toMatch(/TLS|certificate/i);
  expect(remote.received).toHaveLength(0);
  expect(await server.local()).toHaveLength(0);
});

test("silent mail exchanger defers the message", async () => {
  const silent = await startSilentServer();
  cleanup.push(() => silent.close());
  const { queue, server } = await world(ZONE, silent.port, { timeouts: { greeting: 300 } });
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  const [entry] = await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && entries;
  }, "deferral");
  expect(silent.connections).toBe(1);
  expect(entry!.lastError).toMatch(/mx\.ok\.test \[127\.0\.0\.1\]/);
  expect(await server.local()).toHaveLength(0);
});

test("unreachable exchanger falls back to the next", async () => {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const zone: Zone = {
    "ok.test": { MX: [[20, "backup.ok.test"], [10, "primary.ok.test"]] },
    // Nothing listens on 127.0.0.2 at the test port: the connection is refused.
    "primary.ok.test": { A: ["127.0.0.2"] },
    "backup.ok.test": { A: ["127.0.0.1"] },
  };
  const { dns, server } = await world(zone, remote.port);
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  await waitFor(() => remote.received.length === 1, "delivery through the backup");
  const order = dns.queries.filter((query) => query.type === "A").map((query) => query.name);
  expect(order.indexOf("primary.ok.test")).toBeLessThan(order.indexOf("backup.ok.test"));
});

test("loop guard bounces mail to this host", async () => {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const { server } = await world(ZONE, remote.port, { allowLocalDestinations: false });
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  const [bounce] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "bounce");
  expect(bounce!.data).toContain("Status: 5.4.6");
  expect(remote.connections).toBe(0);
});

test.each([
  ["smarthost", "127.0.0.1", (port: number) => ({ smarthost: { host: "127.0.0.1", port, tls: "none" } })],
  // A name is only known to be this host once DNS answers, so `mailroom check` cannot warn about it.
  ['routes["ok.test"]', "filter.ok.test", (port: number) => ({ routes: { "ok.test": { host: "filter.ok.test", port, tls: "none" } } })],
])("loop guard defers a %s on this host", async (option, host, mx) => {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const zone: Zone = { ...ZONE, "filter.ok.test": { A: ["127.0.0.1"] } };
  const { server, queue } = await world(zone, remote.port, { allowLocalDestinations: false, ...mx(remote.port) });
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  const [entry] = await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && entries;
  }, "deferral");
  expect(entry!.lastError).toBe(
    `451 4.4.6 ${option} host ${host} is this host (127.0.0.1), which the loop guard rejects unless ${option}.allowLocal is true`,
  );
  const warning = server.logs.find((line) => line.msg?.startsWith("route host is this host, so the loop guard defers its mail"));
  expect(warning?.option).toBe(option);
  expect(warning?.domain).toBe("ok.test");
  expect(warning?.level).toBe(40);
  expect(remote.connections).toBe(0);
  expect(await server.local()).toHaveLength(0);
});

test("loop guard drops less preferred exchangers", async () => {
  const zone: Zone = {
    "backup.test": { MX: [[10, "self.backup.test"], [20, "other.backup.test"]] },
    "self.backup.test": { A: ["127.0.0.1"] },
    // A multicast address: the kernel rejects a TCP connection to it at once
    // (ENETUNREACH) and sends nothing, should the host ever be tried.
    "other.backup.test": { A: ["224.0.0.1"] },
  };
  const { dns, server, queue } = await world(zone, 25, { allowLocalDestinations: false });
  await submit(server, "alice@local.test", ["bob@backup.test"]);
  const [bounce] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "bounce");
  expect(bounce!.data).toContain("Status: 5.4.6");
  expect(bounce!.data).toContain("Mail for backup.test loops back to this host");
  expect(dns.queries.some((query) => query.name === "other.backup.test")).toBe(false);
  expect(server.logs.some((line) => line.msg === "delivery deferred")).toBe(false);
  await waitFor(async () => (await queue.list()).length === 0, "an empty queue");
});

test("static route overrides DNS", async () => {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const { server } = await world({}, 25, {
    allowLocalDestinations: false,
    routes: { "routed.test": { host: "127.0.0.1", port: remote.port, tls: "none", allowLocal: true } },
  });
  await submit(server, "alice@local.test", ["bob@routed.test"]);
  await waitFor(() => remote.received.length === 1, "delivery over the route");
  expect(remote.received[0]!.to).toEqual(["bob@routed.test"]);
});

test("smarthost gets AUTH over STARTTLS", async () => {
  const remote = await startRemoteMx({ tls: true, auth: { user: "relay", pass: "s3cret" } });
  cleanup.push(() => remote.close());
  const { server } = await world({}, 25, {
    smarthost: { host: "127.0.0.1", port: remote.port, auth: { user: "relay", pass: "s3cret" }, allowLocal: true },
  });
  await submit(server, "alice@local.test", ["bob@anywhere.test"]);
  await waitFor(() => remote.received.length === 1, "delivery through the smarthost");
  expect(remote.received[0]!.secure).toBe(true);
  expect(remote.received[0]!.user).toBe("relay");
});

test("credentials are never sent without TLS", async () => {
  const remote = await startRemoteMx({ auth: { user: "relay", pass: "s3cret" } });
  cleanup.push(() => remote.close());
  const { queue, server } = await world({}, 25, {
    smarthost: { host: "127.0.0.1", port: remote.port, auth: { user: "relay", pass: "s3cret" }, allowLocal: true },
  });
  await submit(server, "alice@local.test", ["bob@anywhere.test"]);
  const [entry] = await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && entries;
  }, "deferral");
  expect(entry!.lastError).toMatch(/not sent in plaintext/);
  expect(remote.received).toHaveLength(0);
});

test("bounce to remote sender leaves from <>", async () => {
  const remote = await startRemoteMx({ rcpt: (address) => (address === "bad@ok.test" ? { code: 550, message: "5.1.1 unknown" } : undefined) });
  cleanup.push(() => remote.close());
  const zone: Zone = { ...ZONE, "sender.test": { MX: [[10, "mx.ok.test"]] } };
  const { server } = await world(zone, remote.port);
  await submit(server, "carol@sender.test", ["bad@ok.test"]);
  await waitFor(() => remote.received.length === 1, "bounce delivered to the sender's exchanger");
  expect(remote.received[0]!.from).toBe("");
  expect(remote.received[0]!.to).toEqual(["carol@sender.test"]);
  expect(remote.received[0]!.data).toContain("Content-Type: message/delivery-status");
});

// Stands in for plugin-relay, which decides from the client address and
// does not let a connection from 127.0.0.1 relay.
const NO_RELAY = `
import { definePlugin, deny } from "@mailroom/core";
export default definePlugin({
  name: "no-relay",
  setup: () => ({
    rcpt: ({ connection, address }) =>
      connection.notes.injected && address.domain !== "local.test"
        ? deny({ code: 550, enhanced: "5.7.1", message: "Relaying denied" })
        : undefined,
  }),
});
`;

test("remote sender bounce skips the relay check", async () => {
  const remote = await startRemoteMx({ rcpt: (address) => (address === "bad@ok.test" ? { code: 550, message: "5.1.1 unknown" } : undefined) });
  cleanup.push(() => remote.close());
  const dns = await startDns({ ...ZONE, "sender.test": { MX: [[10, "mx.ok.test"]] } });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, "no-relay.ts"), NO_RELAY);
  const directory: UserDirectory = { domains: () => ["local.test"], lookup: () => null, findLocalPart: () => [] };
  const server = await startMailroom({
    dir,
    dns,
    mx: { port: remote.port },
    before: ["./no-relay.ts"],
    services: (parent) => parent.register(TOKENS.UserDirectory, { useValue: directory }),
  });
  cleanup.push(() => server.stop());

  await submit(server, "carol@sender.test", ["bad@ok.test"]);
  await waitFor(() => remote.received.length === 1, "bounce delivered to the sender's exchanger");
  expect(remote.received[0]!.from).toBe("");
  expect(remote.received[0]!.to).toEqual(["carol@sender.test"]);
  expect(server.logs.some((line) => line.msg === "bounce queued for outbound delivery")).toBe(true);
  expect(server.logs.some((line) => line.msg === "relaying denied" || line.msg === "bounce refused; dropped")).toBe(false);
});
