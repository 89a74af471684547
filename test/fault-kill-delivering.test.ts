// kill -9 of the real server while clients send and the server delivers to
// a loopback sink at the same time. Delivery is at least once: a copy the
// sink accepted just before a kill may be sent again after the restart, so
// this test counts such copies instead of forbidding them.
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { report, scale, sleep, startCli, startSink, until, type CliServer, type Sink } from "./fault-kit.js";
import { config, inventory, killAll, LOCAL, sender, type Ledger } from "./fault-kill-kit.js";

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

/** Counts how many times the sink received each (message, recipient) pair. */
function sinkCounts(received: Sink["received"]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const message of received) {
    for (const rcpt of message.to) {
      const key = `${message.testId} ${rcpt}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
}

test("delivering server keeps every accepted message", async () => {
  const rounds = scale(1, 4);
  const sendFor = scale(2500, 6000);
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-kill-deliver-"));
  sink = await startSink();
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, config(sink.port, true));
  const ledger: Ledger = { accepted: new Map(), unanswered: 0, refused: 0 };

  for (let round = 0; round < rounds; round++) {
    const server = (running = await startCli(file));
    const started = Date.now();
    const clients = Array.from({ length: 20 }, (_, index) => sender(server.port, ledger, started + sendFor + 2000, round, index));
    await sleep(sendFor * (0.6 + Math.random() * 0.4));
    await killAll(server);
    running = undefined;
    await Promise.all(clients);

    // Each accepted copy is in its maildir (once), in the queue, or at the sink.
    const { stored, problems } = await inventory(dir);
    expect(problems).toEqual([]);
    const delivered = sinkCounts(sink.received);
    const missing: string[] = [];
    for (const [id, to] of ledger.accepted) {
      for (const rcpt of to) {
        const key = `${id} ${rcpt}`;
        if (!stored.has(key) && !delivered.has(key)) missing.push(key);
      }
    }
    expect(missing).toEqual([]);
    const localTwice = [...stored].filter(([key, places]) => LOCAL.includes(key.split(" ")[1]!) && places.length > 1);
    expect(localTwice).toEqual([]);
  }

  running = await startCli(file);
  const records = async () =>
    (await readdir(path.join(dir!, "queue/active"))).filter((name) => name.endsWith(".msg")).length +
    (await readdir(path.join(dir!, "queue/claimed"))).length;
  await until(async () => (await records()) === 0, "the queue to empty", scale(20_000, 60_000));
  await killAll(running);
  running = undefined;

  const delivered = sinkCounts(sink.received);
  const remote = [...ledger.accepted].flatMap(([id, to]) => to.filter((rcpt) => !LOCAL.includes(rcpt)).map((rcpt) => `${id} ${rcpt}`));
  expect(remote.filter((key) => !delivered.has(key))).toEqual([]);
  const again = [...delivered.values()].filter((count) => count > 1).length;
  report("kill -9 while 20 clients send and the server delivers", {
    load: `20 clients sending back to back for ~${sendFor / 1000} s per round, ${rounds} round(s), while plugin-mx delivers to a loopback sink`,
    faults: `${rounds} SIGKILL(s) of the mailroom process at a random moment`,
    inputs: `${ledger.accepted.size} messages accepted with ${remote.length} copies for remote recipients, ${ledger.unanswered} cut before their reply`,
    delivered: `every accepted remote copy reached the sink; ${again} copies were delivered twice (accepted by the sink just before a kill)`,
    lost: 0,
  });
}, scale(60_000, 240_000));
