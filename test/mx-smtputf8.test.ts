// Relaying international mail (RFC 6531): A-label domains on the wire,
// SMTPUTF8 on MAIL FROM where the message needs it and the remote offers it,
// and a 5.6.7 bounce where it needs it and the remote does not. The remotes
// are raw SMTP servers on 127.0.0.1 that record each command line as sent.
import { rm } from "node:fs/promises";
import { afterEach, expect, test } from "vitest";
import type { TestServer } from "@mailroom/testing";
import { makeServerDir, parseMultipart, startDns, startMailroom, startRawMx, statusGroups, waitFor, type Mailroom, type RawMx } from "./mx-kit.js";

const ZONE = {
  "xn--bcher-kva.example": { MX: [[10, "mx.far.test"]] as [number, string][] },
  "far.test": { MX: [[10, "mx.far.test"]] as [number, string][] },
  "mx.far.test": { A: ["127.0.0.1"] },
};

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function setup(smtpUtf8: boolean): Promise<{ remote: RawMx; server: Mailroom }> {
  const remote = await startRawMx({ smtpUtf8 });
  cleanup.push(() => remote.close());
  const dns = await startDns(ZONE);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => server.stop());
  return { remote, server };
}

/** Sends one message, with SMTPUTF8 on MAIL FROM when `smtpUtf8` is set, and returns the reply codes. */
async function relay(server: TestServer, from: string, to: string[], header: string, smtpUtf8 = true): Promise<number[]> {
  const client = await server.connect();
  try {
    const codes = [(await client.command("EHLO client.test")).code];
    codes.push((await client.command(`MAIL FROM:<${from}>${smtpUtf8 ? " SMTPUTF8" : ""}`)).code);
    for (const recipient of to) codes.push((await client.command(`RCPT TO:<${recipient}>`)).code);
    codes.push((await client.command("DATA")).code);
    codes.push((await client.command(`${header}\r\nMessage-ID: <t${Date.now()}@client.test>\r\n\r\nhello\r\n.`)).code);
    await client.command("QUIT");
    return codes;
  } finally {
    client.close();
  }
}

const ACCEPTED = (recipients: number) => [250, 250, ...Array<number>(recipients).fill(250), 354, 250];

/** Waits until every queue record is gone. */
async function drained(server: Mailroom): Promise<void> {
  const { TOKENS } = await import("@mailroom/core");
  const queue = server.server.container.resolve<{ list(): Promise<unknown[]> }>(TOKENS.OutboundQueue);
  await waitFor(async () => (await queue.list()).length === 0, "an empty queue");
}

/** Returns the bounce that the local route stored, split into its parts. */
async function bounce(server: Mailroom) {
  const [stored] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "the bounce");
  return { to: stored!.to, ...parseMultipart(stored!.data) };
}

test("ASCII local part goes with an A-label domain", async () => {
  const { remote, server } = await setup(true);
  expect(await relay(server, "alice@local.test", ["bob@bücher.example"], "Subject: plain")).toEqual(ACCEPTED(1));
  const [sent] = await waitFor(() => remote.transactions.length === 1 && remote.transactions, "delivery");
  expect(sent!.mail).toBe("MAIL FROM:<alice@local.test>");
  expect(sent!.rcpt).toEqual(["RCPT TO:<bob@xn--bcher-kva.example>"]);
  expect(sent!.data.toString("utf8")).toContain("\tfor <bob@xn--bcher-kva.example>;");
  expect(remote.eightBitCommands).toEqual([]);
});

test("A-label domain reaches a server without SMTPUTF8", async () => {
  const { remote, server } = await setup(false);
  expect(await relay(server, "alice@bücher.example", ["bob@bücher.example"], "Subject: plain")).toEqual(ACCEPTED(1));
  const [sent] = await waitFor(() => remote.transactions.length === 1 && remote.transactions, "delivery");
  expect(sent!.mail).toBe("MAIL FROM:<alice@xn--bcher-kva.example>");
  expect(sent!.rcpt).toEqual(["RCPT TO:<bob@xn--bcher-kva.example>"]);
  expect(sent!.data.every((octet) => octet < 128)).toBe(true);
  expect(remote.eightBitCommands).toEqual([]);
  await drained(server);
  expect(await server.local()).toEqual([]);
});

test("non-ASCII recipient goes with SMTPUTF8", async () => {
  const { remote, server } = await setup(true);
  expect(await relay(server, "alice@local.test", ["bøb@far.test"], "Subject: plain")).toEqual(ACCEPTED(1));
  const [sent] = await waitFor(() => remote.transactions.length === 1 && remote.transactions, "delivery");
  expect(sent!.mail).toBe("MAIL FROM:<alice@local.test> SMTPUTF8");
  expect(sent!.rcpt).toEqual(["RCPT TO:<bøb@far.test>"]);
});

test("non-ASCII sender goes with SMTPUTF8", async () => {
  const { remote, server } = await setup(true);
  expect(await relay(server, "ålice@local.test", ["bob@far.test"], "Subject: plain")).toEqual(ACCEPTED(1));
  const [sent] = await waitFor(() => remote.transactions.length === 1 && remote.transactions, "delivery");
  expect(sent!.mail).toBe("MAIL FROM:<ålice@local.test> SMTPUTF8");
  expect(sent!.rcpt).toEqual(["RCPT TO:<bob@far.test>"]);
});

test("UTF-8 header fields go with SMTPUTF8", async () => {
  const { remote, server } = await setup(true);
  expect(await relay(server, "alice@local.test", ["bob@far.test"], "Subject: héllo")).toEqual(ACCEPTED(1));
  const [sent] = await waitFor(() => remote.transactions.length === 1 && remote.transactions, "delivery");
  expect(sent!.mail).toBe("MAIL FROM:<alice@local.test> SMTPUTF8");
  expect(sent!.data.toString("utf8")).toContain("\r\nSubject: héllo\r\n");
});

test("8-bit header without client SMTPUTF8 is relayed as it came", async () => {
  const { remote, server } = await setup(false);
  expect(await relay(server, "alice@local.test", ["bob@far.test"], "Subject: héllo", false)).toEqual(ACCEPTED(1));
  const [sent] = await waitFor(() => remote.transactions.length === 1 && remote.transactions, "delivery");
  expect(sent!.mail).toBe("MAIL FROM:<alice@local.test>");
});

test("non-ASCII recipient bounced where SMTPUTF8 is missing", async () => {
  const { remote, server } = await setup(false);
  expect(await relay(server, "alice@local.test", ["bøb@far.test", "carol@far.test"], "Subject: plain")).toEqual(ACCEPTED(2));
  const [sent] = await waitFor(() => remote.transactions.length === 1 && remote.transactions, "delivery to carol");
  expect(sent!.mail).toBe("MAIL FROM:<alice@local.test>");
  expect(sent!.rcpt).toEqual(["RCPT TO:<carol@far.test>"]);
  expect(remote.eightBitCommands).toEqual([]);

  const report = await bounce(server);
  expect(report.to).toEqual(["alice@local.test"]);
  expect(report.headers["content-type"]).toMatch(/^multipart\/report; report-type=delivery-status;/);
  const status = report.parts.find((part) => part.headers["content-type"] === "message/delivery-status")!;
  expect(status.body).toMatch(/^[\x00-\x7f]*$/);
  const groups = statusGroups(status.body);
  expect(groups).toHaveLength(2);
  expect(groups[1]!["final-recipient"]).toBe("utf-8; b\\x{F8}b@far.test");
  expect(groups[1]!.status).toBe("5.6.7");
  expect(groups[1]!["remote-mta"]).toBe("dns; mx.far.test");
  expect(groups[1]!["diagnostic-code"]).toBe(
    "X-Mailroom; mx.far.test does not offer SMTPUTF8 (RFC 6531), which is needed for the non-ASCII local part of the recipient",
  );
  expect(report.parts[0]!.body).toContain("<bøb@far.test>: mx.far.test does not offer SMTPUTF8");
  await drained(server);
});

test("non-ASCII sender bounced where SMTPUTF8 is missing", async () => {
  const { remote, server } = await setup(false);
  expect(await relay(server, "ålice@local.test", ["bob@far.test", "carol@far.test"], "Subject: plain")).toEqual(ACCEPTED(2));
  const report = await bounce(server);
  expect(report.to).toEqual(["ålice@local.test"]);
  const status = report.parts.find((part) => part.headers["content-type"] === "message/delivery-status")!;
  const groups = statusGroups(status.body).slice(1);
  expect(groups.map((group) => group["final-recipient"])).toEqual(["rfc822; bob@far.test", "rfc822; carol@far.test"]);
  expect(groups.map((group) => group.status)).toEqual(["5.6.7", "5.6.7"]);
  expect(groups[0]!["diagnostic-code"]).toContain("which is needed for the non-ASCII local part of the sender");
  expect(remote.transactions).toEqual([]);
  expect(remote.eightBitCommands).toEqual([]);
});

test("UTF-8 header fields bounced where SMTPUTF8 is missing", async () => {
  const { remote, server } = await setup(false);
  expect(await relay(server, "alice@local.test", ["bob@bücher.example"], "Subject: héllo")).toEqual(ACCEPTED(1));
  const report = await bounce(server);
  const status = report.parts.find((part) => part.headers["content-type"] === "message/delivery-status")!;
  const [, group] = statusGroups(status.body);
  expect(group!["final-recipient"]).toBe("rfc822; bob@xn--bcher-kva.example");
  expect(group!.status).toBe("5.6.7");
  expect(group!["diagnostic-code"]).toContain("which is needed for the UTF-8 header fields of the message");
  const headers = report.parts.find((part) => part.headers["content-type"] === "message/global-headers")!;
  expect(headers.headers["content-transfer-encoding"]).toBe("8bit");
  expect(headers.body).toContain("Subject: héllo");
  expect(remote.transactions).toEqual([]);
  expect(remote.eightBitCommands).toEqual([]);
});

test("null sender gets no bounce for a 5.6.7", async () => {
  const { remote, server } = await setup(false);
  expect(await relay(server, "", ["bøb@far.test"], "Subject: plain")).toEqual(ACCEPTED(1));
  const logged = await waitFor(
    () => server.logs.find((line) => line.msg === "delivery failed for a message from the null sender; no bounce is sent"),
    "the null sender log line",
  );
  expect(logged.recipients).toEqual(["bøb@far.test 5.6.7"]);
  await drained(server);
  expect(await server.local()).toEqual([]);
  expect(remote.transactions).toEqual([]);
  expect(remote.eightBitCommands).toEqual([]);
});
