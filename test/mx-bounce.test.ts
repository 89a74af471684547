import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
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
} from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const ZONE = { "ok.test": { MX: [[10, "mx.ok.test"]] as [number, string][] }, "mx.ok.test": { A: ["127.0.0.1"] } };

test("partial failure bounces only the refused recipient", async () => {
  const remote = await startRemoteMx({
    rcpt: (address) => {
      if (address === "bad@ok.test") return { code: 550, message: "5.1.1 No such mailbox" };
      if (address === "later@ok.test") return { code: 450, message: "4.2.1 Mailbox busy" };
      return undefined;
    },
  });
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const clock = new TestClock(Date.UTC(2026, 0, 5, 9, 0, 0));
  const server = await startMailroom({ dir, dns, clock, mx: { port: remote.port } });
  cleanup.push(() => server.stop());

  const body = "Subject: quarterly report\r\nFrom: Alice <alice@local.test>\r\n\r\nnumbers\r\n";
  await submit(server, "alice@local.test", ["good@ok.test", "bad@ok.test", "later@ok.test"], body);

  const [bounce] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "bounce");
  expect(remote.received.map((message) => message.to)).toEqual([["good@ok.test"]]);
  expect(bounce!.to).toEqual(["alice@local.test"]);
  // Stored through the local route like any message from the null sender.
  expect(bounce!.data).toMatch(/^Return-Path: <>\r\n/);
  // An ASCII bounce is no SMTPUTF8 message, and its Message-ID follows the server's clock.
  expect(bounce!.data).toMatch(/^Return-Path: <>\r\nReceived: [^\r]*\r\n\tby mailroom\.test \(Mailroom\) with ESMTP id /);
  expect(bounce!.data).not.toContain("UTF8SMTP");
  expect(bounce!.data).toMatch(new RegExp(`\r\nMessage-ID: <${clock.now().toString(36)}\\.[0-9a-f]{12}@mailroom\\.test>\r\n`));

  const report = parseMultipart(bounce!.data.slice(bounce!.data.indexOf("\r\nFrom:") + 2));
  expect(report.headers.from).toBe("Mail Delivery System <MAILER-DAEMON@mailroom.test>");
  expect(report.headers.to).toBe("<alice@local.test>");
  expect(report.headers["auto-submitted"]).toBe("auto-replied");
  expect(report.headers["content-type"]).toMatch(/^multipart\/report; report-type=delivery-status; boundary=/);
  expect(report.parts).toHaveLength(3);

  const [text, status, headers] = report.parts;
  expect(text!.headers["content-type"]).toMatch(/^text\/plain/);
  expect(text!.body).toContain("<bad@ok.test>: host mx.ok.test said: 550 5.1.1 No such mailbox");
  expect(text!.body).not.toContain("good@ok.test");
  expect(text!.body).not.toContain("later@ok.test");

  expect(status!.headers["content-type"]).toBe("message/delivery-status");
  const [perMessage, ...perRecipient] = statusGroups(status!.body);
  expect(perMessage!["reporting-mta"]).toBe("dns; mailroom.test");
  expect(perMessage!["arrival-date"]).toBe("Mon, 5 Jan 2026 09:00:00 +0000");
  expect(perRecipient).toEqual([
    {
      "final-recipient": "rfc822; bad@ok.test",
      action: "failed",
      status: "5.1.1",
      "remote-mta": "dns; mx.ok.test",
      "diagnostic-code": "smtp; 550 5.1.1 No such mailbox",
    },
  ]);

  expect(headers!.headers["content-type"]).toBe("text/rfc822-headers");
  expect(headers!.body).toContain("Subject: quarterly report\r\n");
  expect(headers!.body).toMatch(/^Received: from client\.example/);
  expect(headers!.body).not.toContain("numbers");

  // The deferred recipient stays queued with backoff and is delivered on retry.
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  const [entry] = await waitFor(async () => {
    const entries = await queue.list();
    // The bounced recipient leaves the record once its bounce is handed over.
    return entries.length === 1 && entries[0]!.recipients.length === 1 && entries;
  }, "deferred entry");
  expect(entry!.recipients).toEqual(["later@ok.test"]);
  expect(entry!.nextAttemptAt).toBe(clock.now() + 5 * 60_000);
  expect(entry!.lastError).toContain("450 4.2.1 Mailbox busy");

  remote.rcpt = () => undefined;
  clock.advance(4 * 60_000);
  await new Promise((resolve) => setTimeout(resolve, 100));
  expect(remote.received).toHaveLength(1);
  clock.advance(60_000);
  await waitFor(() => remote.received.length === 2, "delivery on retry");
  expect(remote.received[1]!.to).toEqual(["later@ok.test"]);
  await waitFor(async () => (await queue.list()).length === 0, "empty queue");
  expect(await server.local()).toHaveLength(1);
});

test("restart delivers queued mail over one connection", async () => {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));

  const first = await startMailroom({ dir, dns, mx: { port: remote.port, deliver: false } });
  for (const name of ["one", "two", "three"]) {
    const codes = await submit(first, "alice@local.test", [`${name}@ok.test`]);
    expect(codes.at(-1)).toBe(250);
  }
  await first.stop();
  expect(remote.connections).toBe(0);
  // A record damaged on disk is set aside and does not hold up the others.
  await writeFile(path.join(dir, "queue/active/damaged-0.json"), '{"version":1,"id":');

  const second = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => second.stop());
  await waitFor(() => remote.received.length === 3, "three deliveries");
  expect(second.logs.some((line) => line.msg === "unreadable queue record set aside" && line.id === "damaged-0")).toBe(true);
  expect((await readdir(path.join(dir, "queue/corrupt"))).some((name) => name.startsWith("damaged-0."))).toBe(true);
  expect(remote.connections).toBe(1);
  expect(new Set(remote.received.map((message) => message.connection)).size).toBe(1);
  expect(remote.received.map((message) => message.to[0]).sort()).toEqual(["one@ok.test", "three@ok.test", "two@ok.test"]);
});

// Rejects the recipient of every injected message with 451, as a local
// mailbox that cannot take mail would. Bounces are injected.
const DEFER_INJECTED = `
import { definePlugin, denySoft } from "@mailroom/core";
export default definePlugin({
  name: "defer-injected",
  setup: () => ({
    rcpt: ({ connection }) =>
      connection.notes.injected ? denySoft({ code: 451, enhanced: "4.2.0", message: "Mailbox unavailable" }) : undefined,
  }),
});
`;

test("refused bounce retried, then dropped", async () => {
  const remote = await startRemoteMx({ rcpt: () => ({ code: 550, message: "5.1.1 No such mailbox" }) });
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, "defer-injected.ts"), DEFER_INJECTED);
  const clock = new TestClock(Date.UTC(2026, 0, 5, 9, 0, 0));
  const start = clock.now();
  const server = await startMailroom({
    dir,
    dns,
    clock,
    mx: { port: remote.port, retry: ["5m", "10m", "30m"], maxQueueLifetime: "20m" },
    before: ["./defer-injected.ts"],
  });
  cleanup.push(() => server.stop());
  await submit(server, "alice@local.test", ["bad@ok.test"]);

  const retries = () => server.logs.filter((line) => line.msg === "bounce not handed over; trying again later");
  const bounceState = async () => {
    const [name] = await readdir(path.join(dir, "queue/active"));
    const text = await readFile(path.join(dir, "queue/active", name!), "utf8");
    return JSON.parse(text.slice(0, text.indexOf("\n"))) as Record<string, unknown>;
  };
  // Each retry waits for the next delay of the schedule, up to the lifetime counted from the first attempt.
  const expected = [
    { advance: 0, bounceAttempts: 1, bounceAttemptAt: start + 5 * 60_000 },
    { advance: 5 * 60_000, bounceAttempts: 2, bounceAttemptAt: start + 15 * 60_000 },
    { advance: 10 * 60_000, bounceAttempts: 3, bounceAttemptAt: start + 20 * 60_000 },
  ];
  for (const [index, step] of expected.entries()) {
    clock.advance(step.advance);
    await waitFor(() => retries().length === index + 1, `bounce attempt ${index + 1}`);
    await waitFor(async () => (await bounceState().catch(() => undefined))?.bounceAttempts === step.bounceAttempts, "the record's state");
    const state = await bounceState();
    expect(state.bounceAttemptAt).toBe(step.bounceAttemptAt);
    expect(state.bounceFirstAttemptAt).toBe(start);
  }

  clock.advance(5 * 60_000);
  const dropped = await waitFor(
    () => server.logs.find((line) => line.msg === "bounce not handed over within maxQueueLifetime; dropped"),
    "the dropped bounce",
  );
  expect(dropped.level).toBe(50);
  expect(dropped.to).toBe("alice@local.test");
  expect(dropped.recipients).toEqual(["bad@ok.test"]);
  expect(dropped.records).toHaveLength(1);
  expect(JSON.stringify(dropped.err)).toContain("451");
  await waitFor(async () => (await readdir(path.join(dir, "queue/active"))).length === 0, "an empty queue");
  expect(await readdir(path.join(dir, "queue/claimed"))).toEqual([]);
  expect(retries()).toHaveLength(3);
  expect(await server.local()).toEqual([]);
});
