// Envelope addresses that nodemailer would reject but RFC 5321 allows (a
// quoted local part with "<" or ">"), and failures on this side that must
// end one message only, never the other messages of its connection.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import type { TestServer } from "@mailroom/testing";
import { deliverRun, type DeliveryResult, type Job, type JobSource } from "../plugins/mx/src/deliver.js";
import type { Hop } from "../plugins/mx/src/routing.js";
import { makeServerDir, startDns, startMailroom, startRawMx, waitFor, type Mailroom, type RawMx } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const ZONE = {
  "far.test": { MX: [[10, "mx.far.test"]] as [number, string][] },
  "mx.far.test": { A: ["127.0.0.1"] },
};

async function setup(): Promise<{ remote: RawMx; server: Mailroom }> {
  const remote = await startRawMx({ smtpUtf8: false });
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port, retry: ["1s"] } });
  cleanup.push(() => server.stop());
  return { remote, server };
}

/** Sends one message with the paths written as given (angle brackets included) and returns the reply codes. */
async function relay(server: TestServer, from: string, to: string[]): Promise<number[]> {
  const client = await server.connect();
  try {
    const codes = [(await client.command("EHLO client.test")).code, (await client.command(`MAIL FROM:${from}`)).code];
    for (const recipient of to) codes.push((await client.command(`RCPT TO:${recipient}`)).code);
    codes.push((await client.command("DATA")).code);
    codes.push((await client.command(`Message-ID: <t${Date.now()}@client.test>\r\nSubject: quoted\r\n\r\nhello\r\n.`)).code);
    await client.command("QUIT");
    return codes;
  } finally {
    client.close();
  }
}

async function drained(server: Mailroom): Promise<void> {
  const { TOKENS } = await import("@mailroom/core");
  const queue = server.server.container.resolve<{ list(): Promise<unknown[]> }>(TOKENS.OutboundQueue);
  await waitFor(async () => (await queue.list()).length === 0, "an empty queue");
}

test("quoted recipient with > is delivered", async () => {
  const { remote, server } = await setup();
  expect(await relay(server, "<one@local.test>", ['<"a>b"@far.test>', "<good@far.test>"])).toEqual([250, 250, 250, 250, 354, 250]);
  expect(await relay(server, "<two@local.test>", ["<good2@far.test>"])).toEqual([250, 250, 250, 354, 250]);
  await waitFor(() => remote.transactions.length === 2, "both messages");
  const byMail = new Map(remote.transactions.map((transaction) => [transaction.mail, transaction.rcpt]));
  expect(byMail.get("MAIL FROM:<one@local.test>")).toEqual(['RCPT TO:<"a>b"@far.test>', "RCPT TO:<good@far.test>"]);
  expect(byMail.get("MAIL FROM:<two@local.test>")).toEqual(["RCPT TO:<good2@far.test>"]);
  await drained(server);
  expect(server.logs.filter((line) => line.msg === "delivery deferred")).toEqual([]);
  expect(await server.local()).toEqual([]);
});

test("quoted sender with < is delivered", async () => {
  const { remote, server } = await setup();
  expect(await relay(server, '<"x<y"@local.test>', ["<bob@far.test>"])).toEqual([250, 250, 250, 354, 250]);
  const [sent] = await waitFor(() => remote.transactions.length === 1 && remote.transactions, "delivery");
  expect(sent!.mail).toBe('MAIL FROM:<"x<y"@local.test>');
  expect(sent!.rcpt).toEqual(["RCPT TO:<bob@far.test>"]);
  await drained(server);
});

/** Delivers `jobs` in one run to `remote` and returns the results by job id. */
async function run(remote: RawMx, jobs: Job[]): Promise<Map<string, DeliveryResult[]>> {
  const hop: Hop = { name: "mx.far.test", addresses: ["127.0.0.1"], port: remote.port, tls: "none", verify: false };
  const waiting = jobs.slice(1);
  const source: JobSource = {
    next: async () => waiting.shift(),
    rest: async () => waiting.splice(0),
    putBack: (job) => void waiting.unshift(job),
  };
  const results = new Map<string, DeliveryResult[]>();
  await deliverRun(
    [hop],
    jobs[0]!,
    source,
    { heloName: "mailroom.test", timeouts: { connect: 2000, greeting: 2000, socket: 5000 }, maxRecipientsPerTransaction: 50 },
    async () => undefined,
    (job, items) => void results.set(job.id, items),
  );
  return results;
}

function job(id: string, message: Job["message"], sender = "alice@local.test"): Job {
  return { id, sender, recipients: [`${id}@far.test`], message, utf8Headers: false, eightBit: false, body8BitMime: false };
}

const BODY = Buffer.from("Subject: fine\r\n\r\nhello\r\n");

test("unreadable queue file ends its message only", async () => {
  const remote = await startRawMx({ smtpUtf8: false });
  cleanup.push(() => remote.close());
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-envelope-"));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const short = path.join(dir, "short.msg");
  await writeFile(short, "{}\nSubject: cut\r\n");

  const results = await run(remote, [
    job("missing", { path: path.join(dir, "missing.msg"), start: 3, size: 20 }),
    job("short", { path: short, start: 3, size: 40 }),
    job("fine", BODY),
  ]);
  for (const id of ["missing", "short"]) {
    const [result] = results.get(id)!;
    expect(result!.code, id).toBe(451);
    expect(result!.enhanced, id).toBe("4.3.0");
    expect(result!.response, id).toMatch(/^451 4\.3\.0 local error: queue file .* could not be read/);
    expect(result!.remoteMta, id).toBeUndefined();
  }
  expect(results.get("short")![0]!.response).toContain("its message has 14 octets, but its state line records 40");
  expect(results.get("fine")![0]!.code).toBe(250);
  expect(remote.transactions.map((transaction) => transaction.mail)).toEqual(["MAIL FROM:<alice@local.test>"]);
  expect(remote.commands.filter((line) => line.startsWith("EHLO"))).toHaveLength(1);
});

test("read failure during DATA reconnects for the rest", async () => {
  const remote = await startRawMx({ smtpUtf8: false });
  cleanup.push(() => remote.close());
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-envelope-"));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));

  // A folder opens, but reading it fails (EISDIR) once the transaction has begun.
  const results = await run(remote, [job("folder", { path: dir, start: 0 }), job("fine", BODY)]);
  const [failed] = results.get("folder")!;
  expect(failed!.code).toBe(451);
  expect(failed!.response).toMatch(/^451 4\.3\.0 local error: reading the queued message failed/);
  expect(results.get("fine")![0]!.code).toBe(250);
  expect(remote.transactions).toHaveLength(1);
  expect(remote.transactions[0]!.rcpt).toEqual(["RCPT TO:<fine@far.test>"]);
  expect(remote.commands.filter((line) => line.startsWith("EHLO"))).toHaveLength(2);
});

test("sender with a control character fails alone", async () => {
  const remote = await startRawMx({ smtpUtf8: false });
  cleanup.push(() => remote.close());
  const results = await run(remote, [job("broken", BODY, "al\rice@local.test"), job("fine", BODY)]);
  expect(results.get("broken")).toEqual([
    { recipient: "broken@far.test", code: 550, enhanced: "5.1.7", response: 'invalid sender address "al\\rice@local.test": it contains a control character' },
  ]);
  expect(results.get("fine")![0]!.code).toBe(250);
  expect(remote.transactions).toHaveLength(1);
});
