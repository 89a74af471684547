// The outbound queue's disk fills up while a delivery attempt or a bounce
// runs, so the record's new state cannot be written: once space is back, the
// running server writes it and goes on, without a restart.
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterEach, expect, test } from "vitest";
import { QueueStore } from "../plugins/mx/src/store.js";
import { fill, mountTmpfs, report, unmount } from "./fault-kit.js";
import { makeServerDir, startDns, startMailroom, submit, TestClock, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** Starts a remote that holds its RCPT reply until `open()` and then defers, or accepts once `accept` is set. */
async function startGatedMx() {
  const state = { port: 0, accept: false, received: 0, rcptSeen: false, open: () => undefined as void };
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  state.open = () => release();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
    let buffer = "";
    let inData = false;
    socket.write("220 gated.test ESMTP\r\n");
    socket.on("data", async (chunk: Buffer) => {
      buffer += chunk.toString("latin1");
      for (let guard = 0; guard < 1000; guard++) {
        if (inData) {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end === -1) return;
          buffer = buffer.slice(end + 5);
          inData = false;
          state.received += 1;
          socket.write("250 2.0.0 queued\r\n");
          continue;
        }
        const index = buffer.indexOf("\r\n");
        if (index === -1) return;
        const verb = buffer.slice(0, 4).toUpperCase();
        buffer = buffer.slice(index + 2);
        if (verb === "RCPT" && !state.accept) {
          state.rcptSeen = true;
          await gate;
          socket.write("451 4.7.1 try again later\r\n");
        } else if (verb === "DATA") {
          inData = true;
          socket.write("354 go on\r\n");
        } else if (verb === "QUIT") {
          return void socket.end("221 2.0.0 bye\r\n");
        } else if (verb === "EHLO") {
          socket.write("250-gated.test\r\n250 8BITMIME\r\n");
        } else {
          socket.write("250 2.0.0 ok\r\n");
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
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

test("a full queue disk during an attempt delays, then delivers", async (context) => {
  const base = await mkdtemp(path.join(os.tmpdir(), "mailroom-queue-disk-"));
  cleanup.push(() => rm(base, { recursive: true, force: true }));
  const mount = path.join(base, "queue");
  mkdirSync(mount);
  const skip = mountTmpfs(mount, "1m");
  if (skip) context.skip(skip);
  cleanup.push(() => unmount(mount));

  const remote = await startGatedMx();
  const dns = await startDns({ "ok.test": { MX: [[10, "mx.ok.test"]] }, "mx.ok.test": { A: ["127.0.0.1"] } });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const clock = new TestClock();
  const server = await startMailroom({ dir, dns, clock, mx: { port: remote.port, queueDir: mount } });
  cleanup.push(() => server.stop());

  const codes = await submit(server, "alice@local.test", ["bob@ok.test"]);
  expect(codes.at(-1)).toBe(250);
  await waitFor(() => remote.rcptSeen, "the delivery attempt");
  // The attempt is under way: fill the disk, then let the remote defer.
  const filler = path.join(mount, "filler");
  fill(filler);
  remote.open();
  await waitFor(
    () => server.logs.some((line) => line.level === 50 && JSON.stringify(line).includes("ENOSPC")),
    "the failed state write",
  );
  expect(readdirSync(path.join(mount, "claimed"))).toHaveLength(1);
  expect(readdirSync(path.join(mount, "tmp"))).toEqual([]);

  rmSync(filler);
  remote.accept = true;
  clock.advance(6 * 60_000);
  await waitFor(() => remote.received === 1, "the delivery after space came back", 10_000);
  await waitFor(() => readdirSync(path.join(mount, "claimed")).length === 0, "the finished record");
  expect(readdirSync(path.join(mount, "active")).filter((name) => name !== "filler")).toEqual([]);
  expect(await server.local()).toHaveLength(0);
  report("full queue disk during a delivery attempt", {
    load: "one message through plugin-mx with its queue on a 1 MiB tmpfs",
    faults: "the disk fills while the remote holds its RCPT reply, then the remote defers with 451",
    inputs: "1 message: its new state could not be written, then it was delivered once after the filler was removed",
    lost: 0,
  });
});

test("a full queue disk after a bounce delays the record's write", async (context) => {
  const base = await mkdtemp(path.join(os.tmpdir(), "mailroom-queue-disk-"));
  cleanup.push(() => rm(base, { recursive: true, force: true }));
  const mount = path.join(base, "queue");
  mkdirSync(mount);
  const skip = mountTmpfs(mount, "1m");
  if (skip) context.skip(skip);
  cleanup.push(() => unmount(mount));

  // A record with one recipient that failed for good and one still deferred.
  const clock = new TestClock(Date.UTC(2026, 0, 5, 9, 0, 0));
  const writer = new QueueStore(mount, pino({ level: "silent" }));
  await writer.init();
  const {
    records: [added],
  } = await writer.add([Buffer.from("Subject: report\r\n\r\nbody\r\n")], {
    sender: "alice@local.test",
    domains: new Map([["ok.test", ["bad@ok.test", "later@ok.test"]]]),
    now: clock.now(),
  });
  const record = (await writer.claim(added!.id))!;
  record.failed = [{ recipient: "bad@ok.test", code: 550, enhanced: "5.1.1", response: "550 5.1.1 no such user" }];
  record.pending = ["later@ok.test"];
  record.attempts = 1;
  record.nextAttemptAt = clock.now() + 3_600_000;
  await writer.release(record);
  const filler = path.join(mount, "filler");
  fill(filler);

  const dns = await startDns({});
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, clock, mx: { queueDir: mount } });
  cleanup.push(() => server.stop());

  // The bounce goes to the local route (another disk); the record's new state does not fit.
  await waitFor(async () => (await server.local()).length === 1, "the bounce");
  await waitFor(
    () => server.logs.some((line) => line.level === 50 && line.msg === "queue record state not written, retrying at the next scan"),
    "the failed state write",
  );
  expect(readdirSync(path.join(mount, "claimed"))).toHaveLength(1);
  expect(readdirSync(path.join(mount, "tmp"))).toEqual([]);
  expect(server.logs.some((line) => line.msg === "delivery run failed")).toBe(false);

  rmSync(filler);
  clock.advance(60_000);
  await waitFor(() => readdirSync(path.join(mount, "claimed")).length === 0, "the record written back");
  const [file] = readdirSync(path.join(mount, "active"));
  const state = JSON.parse(readFileSync(path.join(mount, "active", file!), "utf8").split("\n")[0]!);
  expect(state.pending).toEqual(["later@ok.test"]);
  expect(state.failed).toEqual([]);
  clock.advance(60_000);
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(await server.local()).toHaveLength(1);
  report("full queue disk after a bounce", {
    load: "one queued record with a failed and a deferred recipient, its queue on a 1 MiB tmpfs",
    faults: "the queue disk is full when the bounce is handed over, so the record's new state cannot be written",
    inputs: "1 bounce: sent once, and the record was written back once space came back",
    lost: 0,
  });
});
