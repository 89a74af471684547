import { rm } from "node:fs/promises";
import { afterEach, expect, test } from "vitest";
import { TOKENS, type OutboundQueue } from "@mailroom/core";
import { makeServerDir, startDns, startMailroom, startRemoteMx, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const REPORT = [
  "From: MAILER-DAEMON@sender.example",
  "Subject: Delivery Status Notification",
  "Content-Type: multipart/report; report-type=delivery-status; boundary=b1",
  "",
  "--b1",
  "Content-Type: text/plain",
  "",
  "Your message could not be delivered.",
  "--b1--",
  "",
].join("\r\n");

test("null sender failures are logged, never bounced", async () => {
  const remote = await startRemoteMx({ rcpt: () => ({ code: 550, message: "5.1.1 No such user" }) });
  cleanup.push(() => remote.close());
  const dns = await startDns({ "remote.test": { MX: [[10, "mx.remote.test"]] }, "mx.remote.test": { A: ["127.0.0.1"] } });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => server.stop());

  const client = await server.connect();
  expect((await client.command("EHLO client.example")).code).toBe(250);
  expect((await client.command("MAIL FROM:<> SIZE=900 BODY=8BITMIME")).code).toBe(250);
  const refused = await client.command("RCPT TO:<>");
  expect([refused.code, refused.enhanced]).toEqual([501, "5.1.3"]);
  expect((await client.command("RCPT TO:<bob@local.test>")).code).toBe(250);
  expect((await client.command("RCPT TO:<gone@remote.test>")).code).toBe(250);
  expect((await client.data(REPORT)).code).toBe(250);
  await client.command("QUIT");
  client.close();

  // The local copy is stored with an empty Return-Path.
  const stored = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "local copy");
  expect(stored[0]!.to).toEqual(["bob@local.test"]);
  expect(stored[0]!.data).toMatch(/^Return-Path: <>\r\n/);

  // The remote recipient is refused; the failure is logged, nothing is sent to <>.
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  await waitFor(async () => (await queue.list()).length === 0, "empty queue");
  const logged = await waitFor(
    () => server.logs.find((line) => line.msg === "delivery failed for a message from the null sender; no bounce is sent"),
    "log line",
  );
  expect(logged.recipients).toEqual(["gone@remote.test 5.1.1"]);
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(await server.local()).toHaveLength(1);
  expect(remote.received).toHaveLength(0);
  expect(remote.connections).toBe(1);
  expect(server.logs.some((line) => line.msg === "bounce sent")).toBe(false);
});
