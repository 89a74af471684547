// Pieces of the kill -9 tests: the server config, the sending clients, the
// ledger of what got 250, and the inventory of what is stored on disk.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { SmtpTestClient } from "@mailroom/testing";
import { expect } from "vitest";
import { header, readMaildir, until, type CliServer } from "./fault-kit.js";

export const LOCAL = ["alice@local.test", "bob@local.test"];
export const REMOTE = ["r1@far.test", "r2@away.test"];

export function config(sinkPort: number, deliver: boolean): string {
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
export interface Ledger {
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

/** Sends messages back to back, as one client, until the connection dies or time is up. */
export async function sender(port: number, ledger: Ledger, until: number, round: number, index: number): Promise<void> {
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
        // Mostly small messages, and one in twenty of about 290 KiB, so kills also land mid-write.
        const filler = "x".repeat(70) + "\r\n";
        const body =
          `Message-ID: <${id}@client.test>\r\nX-Test-Id: ${id}\r\nSubject: kill test\r\n\r\n` +
          filler.repeat(Math.random() < 0.05 ? 4000 : 10 + Math.floor(Math.random() * 200)) +
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

/** Lists where each (message, recipient) pair is stored, and every stored file that is not whole. */
export async function inventory(dir: string) {
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
  const claimed = path.join(dir, "queue/claimed");
  // A record is active/ID.msg, or claimed/ID.PID.TOKEN.msg while a process
  // delivers it: a line of JSON state, then the message.
  const files = [
    ...(existsSync(active) ? await readdir(active) : []).map((name) => ({ folder: active, name })),
    ...(existsSync(claimed) ? await readdir(claimed) : []).map((name) => ({ folder: claimed, name })),
  ].filter((entry) => entry.name.endsWith(".msg"));
  let records = 0;
  for (const { folder, name } of files) {
    const id = name.split(".")[0]!;
    const content = await readFile(path.join(folder, name), "latin1").catch(() => "");
    const lineEnd = content.indexOf("\n");
    let record: { pending: string[] };
    try {
      record = JSON.parse(Buffer.from(content.slice(0, lineEnd), "latin1").toString("utf8"));
    } catch {
      problems.push(`unreadable queue record ${name}`);
      continue;
    }
    const text = content.slice(lineEnd + 1);
    const testId = header(text, "X-Test-Id");
    if (!testId || !text.trimEnd().endsWith(`END ${testId}`)) problems.push(`partial queued message ${id}`);
    records += 1;
    for (const rcpt of record.pending) add(testId ?? "?", rcpt, `queue:${id}`);
  }
  return { stored, problems, records };
}

export function expectEveryAcceptedStoredOnce(ledger: Ledger, stored: Map<string, string[]>) {
  const missing: string[] = [];
  for (const [id, to] of ledger.accepted) {
    for (const rcpt of to) if (!stored.has(`${id} ${rcpt}`)) missing.push(`${id} ${rcpt}`);
  }
  const twice = [...stored].filter(([, places]) => places.length > 1).map(([key, places]) => `${key}: ${places}`);
  expect(missing).toEqual([]);
  expect(twice).toEqual([]);
  return missing.length;
}

/** Returns the ids of the processes that logged "listening": the workers, or the single server. */
export function listeningPids(server: CliServer): number[] {
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

/** Sends SIGKILL to the server and every worker it started, all at once. */
export async function killAll(server: CliServer): Promise<void> {
  const pids = [...new Set([server.child.pid!, ...listeningPids(server)])];
  for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
  await server.exited;
  await until(() => pids.every((pid) => !alive(pid)), "every server process to end", 10_000);
}

