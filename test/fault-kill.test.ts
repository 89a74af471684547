// kill -9 of the real server while clients send: every 250 must hold.
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { SmtpTestClient } from "@mailroom/testing";
import { afterEach, describe, expect, test } from "vitest";
import { report, scale, sleep, startCli, startSink, until, type CliServer, type Sink } from "./fault-kit.js";
import {
  config,
  expectEveryAcceptedStoredOnce,
  inventory,
  killAll,
  listeningPids,
  sender,
  type Ledger,
} from "./fault-kill-kit.js";

let dir: string | undefined;
let running: CliServer | undefined;
let sink: Sink | undefined;

afterEach(async () => {
  if (running) await killAll(running);
  running = undefined;
  await sink?.close();
  sink = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function killScenario(workers: number): Promise<void> {
  const rounds = scale(1, 4);
  // A worker that dies within 5 s of its start stops the whole server, so
  // with workers the single-worker kill comes after that.
  const sendFor = workers > 1 ? scale(7000, 10_000) : scale(2500, 6000);
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-kill-"));
  sink = await startSink();
  const file = path.join(dir, "mailroom.yaml");
  const write = (deliver: boolean) =>
    writeFile(file, config(sink!.port, deliver).replace("server:\n", `server:\n  workers: ${workers}\n`));
  await write(false);
  const ledger: Ledger = { accepted: new Map(), unanswered: 0, refused: 0 };
  let workerKills = 0;

  for (let round = 0; round < rounds; round++) {
    const server = (running = await startCli(file));
    await until(() => listeningPids(server).length >= workers, "every worker to listen", 20_000);
    const started = Date.now();
    const stopAt = started + sendFor + 2000;
    const clients = Array.from({ length: 20 }, (_, index) => sender(server.port, ledger, stopAt, round, index));
    if (workers > 1) {
      // One worker dies while the others go on; the primary starts a new one.
      await sleep(5500);
      process.kill(listeningPids(server)[0]!, "SIGKILL");
      workerKills += 1;
      await until(() => listeningPids(server).length > workers, "a replacement worker", 10_000);
    }
    // The kill falls at a random moment of the sending, not at a quiet point.
    await sleep(Math.max(0, started + sendFor * (0.75 + Math.random() * 0.25) - Date.now()));
    await killAll(server);
    running = undefined;
    await Promise.all(clients);
    const { stored, problems } = await inventory(dir);
    expect(problems).toEqual([]);
    expectEveryAcceptedStoredOnce(ledger, stored);
  }
  expect(ledger.accepted.size).toBeGreaterThan(0);

  // The restarted server, now delivering, empties the queue into the sink.
  const before = await inventory(dir);
  const queued = [...before.stored].filter(([, places]) => places[0]!.startsWith("queue:")).map(([key]) => key);
  await write(true);
  running = await startCli(file);
  // A record being delivered sits in claimed/ until it is finished.
  const records = async () =>
    (await readdir(path.join(dir!, "queue/active"))).filter((name) => name.endsWith(".msg")).length +
    (await readdir(path.join(dir!, "queue/claimed"))).length;
  // The long form leaves tens of thousands of records; the deadline grows with them.
  await until(async () => (await records()) === 0, "the queue to empty", scale(20_000, 60_000) + queued.length * 5);
  await killAll(running);
  running = undefined;

  const delivered = new Map<string, number>();
  for (const message of sink.received) {
    for (const rcpt of message.to) {
      const key = `${message.testId} ${rcpt}`;
      delivered.set(key, (delivered.get(key) ?? 0) + 1);
    }
  }
  expect([...delivered.keys()].sort()).toEqual([...queued].sort());
  expect([...delivered].filter(([, count]) => count !== 1)).toEqual([]);

  const pairs = [...ledger.accepted.values()].reduce((sum, to) => sum + to.length, 0);
  const kind = workers > 1 ? `server.workers: ${workers}` : "one process";
  report(`kill -9 while 20 clients send (${kind})`, {
    load: `20 clients sending back to back for ~${sendFor / 1000} s per round, ${rounds} round(s)`,
    faults:
      `${rounds} SIGKILL(s) of every server process at a random moment of the sending` +
      (workerKills ? `; ${workerKills} SIGKILL(s) of one worker while the other went on` : ""),
    inputs: `${ledger.accepted.size} messages accepted (${pairs} recipient copies), ${ledger.unanswered} cut before their reply, ${ledger.refused} refused`,
    delivered: `${queued.length} queued copies delivered after the restart, each once`,
    lost: 0,
  });
}

describe("kill -9 while 20 clients send", () => {
  test(
    "one process keeps every accepted message",
    () => killScenario(1),
    scale(60_000, 240_000),
  );

  test(
    "two workers keep every accepted message",
    () => killScenario(2),
    scale(60_000, 300_000),
  );
});

/** Starts a message to alice@local.test and sends only part of it, so it stays in the spool. */
async function sendHalfMessage(port: number): Promise<SmtpTestClient> {
  const client = await SmtpTestClient.connect(port);
  await client.command("EHLO client.test");
  await client.command("MAIL FROM:<a@client.test>");
  await client.command("RCPT TO:<alice@local.test>");
  expect((await client.command("DATA")).code).toBe(354);
  client.write("Subject: cut short\r\n\r\nhalf a message");
  return client;
}

test("restart removes a killed server's spool", async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-kill-spool-"));
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(
    file,
    `server:\n  listen: ["127.0.0.1:0"]\nplugins:\n  - use: "@mailroom/plugin-maildir"\n    with: { root: ./mail, domains: { local.test: { mailboxes: [alice] } } }\n`,
  );
  const first = (running = await startCli(file));
  const client = await sendHalfMessage(first.port);
  const prefix = `mailroom-spool-${first.child.pid}-`;
  const leftovers = async () => (await readdir(os.tmpdir())).filter((name) => name.startsWith(prefix));
  await until(async () => (await leftovers()).length === 1, "the spool folder");
  await killAll(first);
  client.close();
  expect(await leftovers()).toHaveLength(1);

  running = await startCli(file);
  expect(await leftovers()).toEqual([]);
});

test("restart removes a killed server's files from a configured spool folder", async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-kill-spooldir-"));
  const file = path.join(dir, "mailroom.yaml");
  // perMessage 0 sends every message to the spool folder from its first byte.
  await writeFile(
    file,
    `server:\n  listen: ["127.0.0.1:0"]\n  spoolDir: ./spool\n  memorySpool: { perMessage: 0 }\nplugins:\n  - use: "@mailroom/plugin-maildir"\n    with: { root: ./mail, domains: { local.test: { mailboxes: [alice] } } }\n`,
  );
  const spool = path.join(dir, "spool");
  const first = (running = await startCli(file));
  const client = await sendHalfMessage(first.port);
  await until(async () => (await readdir(spool)).length === 1, "the spool file");
  const [name] = await readdir(spool);
  expect(name).toMatch(new RegExp(`^${first.child.pid}-.+\\.eml$`));
  expect((await stat(path.join(spool, name!))).mode & 0o777).toBe(0o600);
  await killAll(first);
  client.close();
  expect(await readdir(spool)).toHaveLength(1);

  running = await startCli(file);
  expect(await readdir(spool)).toEqual([]);
});
