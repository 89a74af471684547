// Refusals before any message is sent: a 5xx greeting, a rejected AUTH and
// a refused STARTTLS where TLS is required defer, as Postfix does by default,
// and the DSN of a message that expires after them quotes the reply.
import { rm } from "node:fs/promises";
import net from "node:net";
import { afterEach, expect, test } from "vitest";
import { TOKENS, type OutboundQueue } from "@mailroom/core";
import {
  makeServerDir,
  parseMultipart,
  startDns,
  startMailroom,
  startRemoteMx,
  statusGroups,
  submit,
  TestClock,
  waitFor,
  type Zone,
} from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const GREETING = "554 5.3.2 mx.ok.test busy, no SMTP service right now";

/** Starts a server that greets with GREETING and replies 503 to every command but QUIT. */
async function startRefusingGreeter(options: { host?: string; port?: number } = {}) {
  const state = { port: 0, connections: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    state.connections += 1;
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.write(`${GREETING}\r\n`);
    socket.on("data", (chunk: Buffer) => {
      if (/^QUIT/im.test(chunk.toString("latin1"))) socket.end("221 2.0.0 bye\r\n");
      else socket.write("503 5.5.1 no service\r\n");
    });
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve()));
  state.port = (server.address() as net.AddressInfo).port;
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return state;
}

async function world(zone: Zone, mx: Record<string, unknown>, clock?: TestClock) {
  const dns = await startDns(zone);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx, ...(clock ? { clock } : {}) });
  cleanup.push(() => server.stop());
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  return { server, queue };
}

test("5xx greeting moves on to the next host", async () => {
  // Both on one port, which plugin-mx uses for every exchanger, on two loopback addresses.
  const greeter = await startRefusingGreeter({ host: "127.0.0.2" });
  const remote = await startRemoteMx({ port: greeter.port });
  cleanup.push(() => remote.close());
  const zone: Zone = {
    "ok.test": { MX: [[10, "primary.ok.test"], [20, "backup.ok.test"]] },
    "primary.ok.test": { A: ["127.0.0.2"] },
    "backup.ok.test": { A: ["127.0.0.1"] },
  };
  const { server, queue } = await world(zone, { port: greeter.port });
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  await waitFor(() => remote.received.length === 1, "delivery through the backup");
  expect(greeter.connections).toBe(1);
  await waitFor(async () => (await queue.list()).length === 0, "an empty queue");
  expect(await server.local()).toEqual([]);
});

test("5xx greeting defers, then expires with its reply", async () => {
  const greeter = await startRefusingGreeter();
  const clock = new TestClock(Date.UTC(2026, 0, 5, 9, 0, 0));
  const zone: Zone = { "ok.test": { MX: [[10, "mx.ok.test"]] }, "mx.ok.test": { A: ["127.0.0.1"] } };
  const { server, queue } = await world(zone, { port: greeter.port, retry: ["5m"], maxQueueLifetime: "10m" }, clock);
  await submit(server, "alice@local.test", ["bob@ok.test"]);

  const [entry] = await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && !(entries[0] as { delivering?: boolean }).delivering && entries;
  }, "the deferral");
  expect(entry!.lastError).toBe(GREETING);
  expect(entry!.nextAttemptAt).toBe(clock.now() + 5 * 60_000);
  expect(await server.local()).toEqual([]);

  clock.advance(5 * 60_000);
  await waitFor(() => greeter.connections === 2, "the second attempt");
  clock.advance(5 * 60_000);
  const [bounce] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "the bounce after maxQueueLifetime");
  expect(greeter.connections).toBe(3);
  const report = parseMultipart(bounce!.data.slice(bounce!.data.indexOf("\r\nFrom:") + 2));
  const [, recipient] = statusGroups(report.parts[1]!.body);
  expect(recipient!["final-recipient"]).toBe("rfc822; bob@ok.test");
  expect(recipient!.action).toBe("failed");
  expect(recipient!.status).toBe("4.3.2");
  expect(recipient!["remote-mta"]).toBe("dns; mx.ok.test");
  expect(recipient!["diagnostic-code"]).toBe(`smtp; ${GREETING} (gave up after 10 minutes)`);
  expect(report.parts[0]!.body).toContain(`<bob@ok.test>: host mx.ok.test said: ${GREETING} (gave up after 10 minutes)`);
});

test("rejected AUTH at the smarthost defers", async () => {
  const remote = await startRemoteMx({ tls: true, auth: { user: "relay", pass: "s3cret" } });
  cleanup.push(() => remote.close());
  const { server, queue } = await world({}, {
    smarthost: { host: "127.0.0.1", port: remote.port, auth: { user: "relay", pass: "wrong" }, allowLocal: true },
  });
  await submit(server, "alice@local.test", ["bob@anywhere.test"]);
  const [entry] = await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && !(entries[0] as { delivering?: boolean }).delivering && entries;
  }, "the deferral");
  expect(entry!.lastError).toMatch(/^535 /);
  expect(entry!.lastError).toContain("Invalid username or password");
  expect(entry!.recipients).toEqual(["bob@anywhere.test"]);
  expect(remote.received).toHaveLength(0);
  expect(await server.local()).toEqual([]);
  const deferred = server.logs.find((line) => line.msg === "delivery deferred")!;
  expect(deferred.code).toBe(535);
  expect(deferred.enhanced).toMatch(/^4\./);
});

test.each([
  ["a tls: required route", (port: number) => ({ routes: { "ok.test": { host: "127.0.0.1", port, tls: "required", allowLocal: true } } })],
  ["a tls.requireFor domain", (port: number) => ({ port, tls: { requireFor: ["ok.test"] } })],
])("no STARTTLS for %s defers", async (_name, settings) => {
  // The remote offers no STARTTLS and refuses the command with 500.
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const zone: Zone = { "ok.test": { MX: [[10, "mx.ok.test"]] }, "mx.ok.test": { A: ["127.0.0.1"] } };
  const { server, queue } = await world(zone, settings(remote.port));
  await submit(server, "alice@local.test", ["bob@ok.test"]);
  const [entry] = await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && !(entries[0] as { delivering?: boolean }).delivering && entries;
  }, "the deferral");
  expect(entry!.recipients).toEqual(["bob@ok.test"]);
  expect(remote.received).toHaveLength(0);
  // No bounce went to the sender.
  expect(await server.local()).toEqual([]);
});

test("refused connection expires without Remote-MTA", async () => {
  // A port that nothing listens on once the server is closed.
  const closed = net.createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", () => resolve()));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const clock = new TestClock(Date.UTC(2026, 0, 5, 9, 0, 0));
  const zone: Zone = { "ok.test": { MX: [[10, "mx.ok.test"]] }, "mx.ok.test": { A: ["127.0.0.1"] } };
  const { server, queue } = await world(zone, { port, retry: ["1h"], maxQueueLifetime: "2h" }, clock);
  await submit(server, "alice@local.test", ["bob@ok.test"]);

  await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && !(entries[0] as { delivering?: boolean }).delivering;
  }, "the first deferral");
  clock.advance(60 * 60_000);
  await waitFor(async () => (await queue.list())[0]?.attempts === 2, "the second attempt");
  clock.advance(60 * 60_000);
  const [bounce] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "the bounce after maxQueueLifetime");
  const report = parseMultipart(bounce!.data.slice(bounce!.data.indexOf("\r\nFrom:") + 2));
  const [, recipient] = statusGroups(report.parts[1]!.body);
  expect(recipient!.status).toBe("4.4.1");
  expect(recipient!["remote-mta"]).toBeUndefined();
  expect(recipient!["diagnostic-code"]).toMatch(
    new RegExp(`^X-Mailroom; mx\\.ok\\.test \\[127\\.0\\.0\\.1\\]: .*ECONNREFUSED.* \\(gave up after 2 hours\\)$`),
  );
  expect(report.parts[0]!.body).not.toContain("said:");
});
