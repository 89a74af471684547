// kill -9 of the real server while clients send: every 250 must hold.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { SmtpTestClient } from "@mailroom/testing";
import { afterEach, describe, expect, test } from "vitest";
import {
  header,
  readMaildir,
  report,
  scale,
  sleep,
  startCli,
  startSink,
  until,
  type CliServer,
  type Sink,
} from "./fault-kit.js";

const LOCAL = ["alice@local.test", "bob@local.test"];
const REMOTE = ["r1@far.test", "r2@away.test"];

function config(sinkPort: number, deliver: boolean): string {
  return `server:
  hostname: mx.kill.test
  listen: ["127.0.0.1:0"]
  spoolDir: ./spool
  limits: { maxConnectionsPerIp: 200 }
plugins:
  - use: "@mailroom/plugin-relay"
    with: { trustedNetworks: ["127.0.0.1"] }
  - use: "@mailroom/plugin-maildir"
    with: { root: ./mail, domains: { local.test: { mailboxes: [alice, bob] } } }
  - use: "@mailroom/plugin-mx"
    with:
      queueDir: ./queue
      deliver: ${deliver}
      allowLocalDestinations: true
      pollInterval: 200ms
      retry: [1s]
      smarthost: { host: 127.0.0.1, port: ${sinkPort}, tls: none, allowLocal: true }
`;
}

/** What the clients saw: the recipients of each message that got 250 after DATA. */
interface Ledger {
  accepted: Map<string, string[]>;
  /** Messages whose DATA was sent but whose reply never came (the kill cut it). */
  unanswered: number;
  refused: number;
}

function pickRecipients(): string[] {
  const all = [...LOCAL, ...REMOTE];
  const chosen = all.filter(() => Math.random() < 0.5);
  return chosen.length ? chosen : [all[Math.floor(Math.random() * all.length)]!];
}

/** One client: sends messages back to back until the connection dies or time is up. */
async function sender(port: number, ledger: Ledger, until: number, round: number, index: number): Promise<void> {
  let serial = 0;
  // Bounded: at most 10,000 messages per client, and never past `until`.
  while (Date.now() < until && serial < 10_000) {
    let client: SmtpTestClient;
    try {
      client = await SmtpTestClient.connect(port);
    } catch {
      return;
    }
    try {
      await client.command("EHLO client.test");
      for (let n = 0; n < 50 && Date.now() < until; n++) {
        const id = `r${round}c${index}m${serial++}-${randomBytes(3).toString("hex")}`;
        const to = pickRecipients();
        if ((await client.command("MAIL FROM:<sender@client.test>")).code !== 250) break;
        for (const rcpt of to) await client.command(`RCPT TO:<${rcpt}>`);
        const filler = "x".repeat(70) + "\r\n";
        const body =
          `Message-ID: <${id}@client.test>\r\nX-Test-Id: ${id}\r\nSubject: kill test\r\n\r\n` +
          filler.repeat(10 + Math.floor(Math.random() * 200)) +
          `END ${id}\r\n`;
        const start = await client.command("DATA");
        if (start.code !== 354) break;
        client.write(`${body}.\r\n`);
        let reply;
        try {
          reply = await client.read(15_000);
        } catch {
          ledger.unanswered += 1;
          return;
        }
        if (reply.code === 250) ledger.accepted.set(id, to);
        else ledger.refused += 1;
      }
      await client.command("QUIT").catch(() => undefined);
    } catch {
      return;
    } finally {
      client.close();
    }
  }
}

/** Where every (message, recipient) pair is stored, with the checks that nothing is half there. */
async function inventory(dir: string) {
  const stored = new Map<string, string[]>();
  const problems: string[] = [];
  const add = (id: string, rcpt: string, where: string) => {
    const key = `${id} ${rcpt}`;
    stored.set(key, [...(stored.get(key) ?? []), where]);
  };
  for (const rcpt of LOCAL) {
    const folder = path.join(dir, "mail/local.test", rcpt.split("@")[0]!, "Maildir");
    if (!existsSync(folder)) continue;
    for (const entry of readMaildir(folder)) {
      if (!entry.testId || entry.lastLine !== `END ${entry.testId}`) problems.push(`partial maildir file ${entry.key}`);
      if (entry.deliveredTo !== rcpt) problems.push(`${entry.key} has Delivered-To ${entry.deliveredTo}`);
      add(entry.testId ?? "?", rcpt, `maildir:${entry.key}`);
    }
  }
  const active = path.join(dir, "queue/active");
  let records = 0;
  for (const name of existsSync(active) ? await readdir(active) : []) {
    if (!name.endsWith(".json")) continue;
    const id = name.slice(0, -5);
    let record: { pending: string[] };
    try {
      record = JSON.parse(await readFile(path.join(active, name), "utf8"));
    } catch {
      problems.push(`unreadable queue record ${name}`);
      continue;
    }
    const text = await readFile(path.join(active, `${id}.eml`), "latin1").catch(() => "");
    const testId = header(text, "X-Test-Id");
    if (!testId || !text.trimEnd().endsWith(`END ${testId}`)) problems.push(`partial queued message ${id}`);
    records += 1;
    for (const rcpt of record.pending) add(testId ?? "?", rcpt, `queue:${id}`);
  }
  return { stored, problems, records };
}

function expectEveryAcceptedStoredOnce(ledger: Ledger, stored: Map<string, string[]>) {
  const missing: string[] = [];
  for (const [id, to] of ledger.accepted) {
    for (const rcpt of to) if (!stored.has(`${id} ${rcpt}`)) missing.push(`${id} ${rcpt}`);
  }
  const twice = [...stored].filter(([, places]) => places.length > 1).map(([key, places]) => `${key}: ${places}`);
  expect(missing).toEqual([]);
  expect(twice).toEqual([]);
  return missing.length;
}

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

/** Process ids of the processes that logged "listening": the workers, or the single server. */
function listeningPids(server: CliServer): number[] {
  return server
    .logs()
    .split("\n")
    .filter((line) => line.includes('"msg":"listening"'))
    .map((line) => JSON.parse(line).pid as number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGKILL to the server and every worker it started, all at once. */
async function killAll(server: CliServer): Promise<void> {
  const pids = [...new Set([server.child.pid!, ...listeningPids(server)])];
  for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
  await server.exited;
  await until(() => pids.every((pid) => !alive(pid)), "every server process to end", 10_000);
}

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
    (await readdir(path.join(dir!, "queue/active"))).filter((name) => name.endsWith(".json")).length +
    (await readdir(path.join(dir!, "queue/claimed"))).length;
  await until(async () => (await records()) === 0, "the queue to empty", scale(20_000, 60_000));
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

test("restart removes a killed server's spool", async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-kill-spool-"));
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(
    file,
    `server:\n  listen: ["127.0.0.1:0"]\nplugins:\n  - use: "@mailroom/plugin-maildir"\n    with: { root: ./mail, domains: { local.test: { mailboxes: [alice] } } }\n`,
  );
  const first = (running = await startCli(file));
  const client = await SmtpTestClient.connect(first.port);
  await client.command("EHLO client.test");
  await client.command("MAIL FROM:<a@client.test>");
  await client.command("RCPT TO:<alice@local.test>");
  expect((await client.command("DATA")).code).toBe(354);
  client.write("Subject: cut short\r\n\r\nhalf a message");
  const prefix = `mailroom-spool-${first.child.pid}-`;
  const leftovers = async () => (await readdir(os.tmpdir())).filter((name) => name.startsWith(prefix));
  await until(async () => (await leftovers()).length === 1, "the spool folder");
  await killAll(first);
  client.close();
  expect(await leftovers()).toHaveLength(1);

  running = await startCli(file);
  expect(await leftovers()).toEqual([]);
});
