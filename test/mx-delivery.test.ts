import { readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { makeServerDir, startDns, startMailroom, startRemoteMx, submit, waitFor, type DnsFixture, type Mailroom, type RemoteMx } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function setup(remoteOptions: Parameters<typeof startRemoteMx>[0] = {}, mx: Record<string, unknown> = {}) {
  const remote = await startRemoteMx(remoteOptions);
  cleanup.push(() => remote.close());
  const dns = await startDns({
    "ok.test": { MX: [[10, "mx.ok.test"]] },
    "mx.ok.test": { A: ["127.0.0.1"] },
  });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port, ...mx } });
  cleanup.push(() => server.stop());
  return { remote, dns, server, dir };
}

test("relayed mail reaches the mail exchanger", async () => {
  const { remote, server } = await setup({}, { heloName: "out.mailroom.test" });
  expect(await submit(server, "alice@local.test", ["bob@ok.test"])).toEqual([250, 250, 250, 250]);
  const [message] = await waitFor(() => remote.received.length === 1 && remote.received, "delivery");
  expect(message!.from).toBe("alice@local.test");
  expect(message!.to).toEqual(["bob@ok.test"]);
  expect(message!.helo).toBe("out.mailroom.test");
  expect(message!.data).toMatch(/^Received: from client\.example/);
  expect(message!.data).not.toMatch(/^Return-Path:/m);
  expect(message!.data.endsWith("Subject: test\r\n\r\nhello\r\n")).toBe(true);
  await waitFor(async () => (await queueEntries(server)).length === 0, "empty queue");
});

/**
 * Injects a message for bob@ok.test in its start(), which runs before
 * plugin-mx's start(), and lists the outbound queue there. It writes the
 * results to early.json.
 */
const EARLY_NOTICE = `
import { writeFileSync } from "node:fs";
import { definePlugin, TOKENS } from "@mailroom/core";

export default definePlugin({
  name: "early-notice",
  setup({ container, configDir }) {
    return {
      async start() {
        const injector = container.resolve(TOKENS.Injector);
        const queue = container.resolve(TOKENS.OutboundQueue);
        const listed = (await queue.list()).length;
        const result = await injector.inject({ sender: "", recipients: ["bob@ok.test"], content: "Subject: started\\r\\n\\r\\nup\\r\\n" });
        writeFileSync(configDir + "/early.json", JSON.stringify({ listed, stored: result.stored, code: result.code }));
      },
    };
  },
});
`;

test("plugin starting before mx may queue mail", async () => {
  const remote = await startRemoteMx();
  cleanup.push(() => remote.close());
  const dns = await startDns({
    "ok.test": { MX: [[10, "mx.ok.test"]] },
    "mx.ok.test": { A: ["127.0.0.1"] },
  });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, "early.ts"), EARLY_NOTICE);
  const server = await startMailroom({ dir, dns, mx: { port: remote.port }, before: ["./early.ts"] });
  cleanup.push(() => server.stop());

  const early = JSON.parse(await readFile(path.join(dir, "early.json"), "utf8")) as { listed: number; stored: boolean; code: number };
  expect(early.listed).toBe(0);
  expect(early.code).toBe(250);
  expect(early.stored).toBe(true);
  const [message] = await waitFor(() => remote.received.length === 1 && remote.received, "delivery");
  expect(message!.to).toEqual(["bob@ok.test"]);
  expect(message!.data.endsWith("Subject: started\r\n\r\nup\r\n")).toBe(true);
});

async function queueEntries(server: Mailroom) {
  const { TOKENS } = await import("@mailroom/core");
  const queue = server.server.container.resolve<{ list(): Promise<unknown[]> }>(TOKENS.OutboundQueue);
  return queue.list();
}

test("large message is relayed whole", async () => {
  const { remote, server } = await setup();
  // Over the 1 MiB that plugin-mx keeps in memory, so it is sent from the queue file.
  const line = `${"x".repeat(998)}\r\n`;
  const body = `Subject: large\r\n\r\n${line.repeat(1600)}.leading dot\r\nEND\r\n`;
  expect((await submit(server, "alice@local.test", ["bob@ok.test"], body)).at(-1)).toBe(250);
  const [message] = await waitFor(() => remote.received.length === 1 && remote.received, "delivery");
  expect(message!.data.length).toBeGreaterThan(1600 * line.length);
  expect(message!.data.endsWith(`${line}.leading dot\r\nEND\r\n`)).toBe(true);
  await waitFor(async () => (await queueEntries(server)).length === 0, "empty queue");
});

test("recipients past the remote's limit go at once", async () => {
  const { remote, server } = await setup({ maxRecipients: 2 });
  const recipients = ["r0@ok.test", "r1@ok.test", "r2@ok.test", "r3@ok.test", "r4@ok.test"];
  expect((await submit(server, "alice@local.test", recipients)).at(-1)).toBe(250);
  await waitFor(() => remote.received.length === 3, "three transactions");
  expect(remote.received.map((message) => message.to)).toEqual([["r0@ok.test", "r1@ok.test"], ["r2@ok.test", "r3@ok.test"], ["r4@ok.test"]]);
  expect(remote.connections).toBe(1);
  await waitFor(async () => (await queueEntries(server)).length === 0, "empty queue");
  expect(server.logs.filter((line) => line.msg === "delivery deferred")).toEqual([]);
  expect(server.logs.filter((line) => line.msg === "delivered")).toHaveLength(5);
});

test("maxRecipientsPerTransaction splits a message", async () => {
  const { remote, server } = await setup({}, { maxRecipientsPerTransaction: 2 });
  const recipients = ["r0@ok.test", "r1@ok.test", "r2@ok.test", "r3@ok.test", "r4@ok.test"];
  expect((await submit(server, "alice@local.test", recipients)).at(-1)).toBe(250);
  await waitFor(() => remote.received.length === 3, "three transactions");
  expect(remote.received.map((message) => message.to)).toEqual([["r0@ok.test", "r1@ok.test"], ["r2@ok.test", "r3@ok.test"], ["r4@ok.test"]]);
  expect(new Set(remote.received.map((message) => message.connection)).size).toBe(1);
  await waitFor(async () => (await queueEntries(server)).length === 0, "empty queue");
});

test("452 with nothing delivered defers", async () => {
  const requested: string[] = [];
  const { remote, server } = await setup({
    rcpt: (address) => {
      requested.push(address);
      return { code: 452, message: "4.5.3 Too many recipients" };
    },
  });
  expect((await submit(server, "alice@local.test", ["r0@ok.test", "r1@ok.test"])).at(-1)).toBe(250);
  await waitFor(() => server.logs.filter((line) => line.msg === "delivery deferred").length === 2, "two deferrals");
  expect(requested).toEqual(["r0@ok.test", "r1@ok.test"]);
  expect(remote.received).toEqual([]);
  const [entry] = (await queueEntries(server)) as { attempts: number; lastError?: string }[];
  expect(entry!.attempts).toBe(1);
  expect(entry!.lastError).toBe("452 4.5.3 Too many recipients");
});
