// When the engine rejects a message after some routes stored it (a later
// route fails, or a queue hook misses server.hookTimeout), the stock plugins
// remove their copies, so the client's retry does not duplicate them.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, expect, test } from "vitest";
import { recordingLogger, startSink, type Sink } from "../plugins/relay/test/helpers.js";
import { waitFor } from "./mx-kit.js";

// Accepts recipients at slow.test on its own route. At queue, "late" waits
// past the hook deadline and then returns OK, "fail" returns 451 at once,
// and any other recipient gets OK at once. Each call writes the value that
// `accepted` resolved to into decisions/
const SLOW_STORE = `
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { definePlugin, denySoft, ok, z } from "@mailroom/core";

export default definePlugin({
  name: "slow-store",
  options: z.object({ delay: z.number() }),
  setup({ options, configDir, registerRoute }) {
    registerRoute("slow");
    const folder = path.join(configDir, "decisions");
    mkdirSync(folder, { recursive: true });
    return {
      rcpt: ({ address }) => (address.domain === "slow.test" ? ok({ route: "slow" }) : undefined),
      async queue({ recipients, transaction, accepted }) {
        void accepted.then((value) => writeFileSync(path.join(folder, transaction.id), String(value)));
        const locals = recipients.map((recipient) => recipient.address.local);
        if (locals.includes("fail")) return denySoft();
        if (locals.includes("late")) await new Promise((resolve) => setTimeout(resolve, options.delay));
        return ok();
      },
    };
  },
});
`;

const HOOK_TIMEOUT_MS = 200;

let dir: string;
let server: TestServer | undefined;
let sink: Sink | undefined;
let entries: Record<string, unknown>[] = [];

afterEach(async () => {
  await server?.stop();
  await sink?.close();
  server = undefined;
  sink = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function start(options: { hookTimeout?: string; mailboxes?: string[] } = {}): Promise<TestServer> {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-rollback-"));
  writeFileSync(path.join(dir, "slow-store.ts"), SLOW_STORE);
  sink = await startSink();
  const recording = recordingLogger();
  entries = recording.entries;
  server = await startTestServer(
    {
      server: { hostname: "mx.local.test", hookTimeout: options.hookTimeout ?? `${HOOK_TIMEOUT_MS}ms` },
      plugins: [
        { use: "@mailroom/plugin-maildir", with: { root: "./mail", domains: { "local.test": { mailboxes: options.mailboxes ?? ["bob"] } } } },
        { use: "./slow-store.ts", with: { delay: HOOK_TIMEOUT_MS * 2 } },
        { use: "@mailroom/plugin-relay", with: { trustedNetworks: ["127.0.0.1"] } },
        {
          use: "@mailroom/plugin-mx",
          with: { queueDir: "./queue", smarthost: { host: "127.0.0.1", port: sink.port, tls: "none", allowLocal: true } },
        },
      ],
    },
    { dir, logger: recording.logger },
  );
  return server;
}

async function send(to: string[], message = "Subject: rollback\r\n\r\nhello\r\n"): Promise<number> {
  const client = await SmtpTestClient.connect(server!.port);
  const replies = await client.send({ from: "alice@sender.test", to, message });
  client.close();
  expect(replies.slice(0, -1).every((reply) => reply.code < 400)).toBe(true);
  return replies.at(-1)!.code;
}

function mailbox(name: string): string[] {
  const folder = path.join(dir, "mail/local.test", name, "Maildir/new");
  return existsSync(folder) ? readdirSync(folder) : [];
}

function queued(): string[] {
  return ["active", "claimed"].flatMap((folder) => readdirSync(path.join(dir, "queue", folder)));
}

/** Returns the values that the slow route's calls saw `accepted` resolve to. */
function decisions(): string[] {
  const folder = path.join(dir, "decisions");
  return readdirSync(folder).map((name) => readFileSync(path.join(folder, name), "utf8"));
}

test("accepted message reaches every route", async () => {
  await start();
  expect(await send(["bob@local.test", "carol@far.test", "quick@slow.test"])).toBe(250);
  expect(mailbox("bob")).toHaveLength(1);
  await waitFor(() => decisions().length === 1, "the slow route's decision");
  expect(decisions()).toEqual(["true"]);
  await waitFor(() => sink!.messages.length === 1, "delivery to the smarthost");
  expect(sink!.messages[0]!.to).toEqual(["carol@far.test"]);
});

test("later route refusing removes earlier copies", async () => {
  await start();
  expect(await send(["bob@local.test", "carol@far.test", "fail@slow.test"])).toBe(451);
  await waitFor(() => entries.some((entry) => entry.msg === "message rejected after it was queued, records removed"), "removal of the queue records");
  await waitFor(() => entries.some((entry) => entry.msg === "removed the copies of a rejected message"), "removal of the maildir copy");
  expect(mailbox("bob")).toEqual([]);
  expect(queued()).toEqual([]);
  expect(decisions()).toEqual(["false"]);
  // No record is left, so the smarthost never receives the message.
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(sink!.messages).toEqual([]);
});

test("route missing the deadline removes earlier copies", async () => {
  await start();
  expect(await send(["bob@local.test", "carol@far.test", "late@slow.test"])).toBe(451);
  await waitFor(() => entries.some((entry) => entry.msg === "message rejected after it was queued, records removed"), "removal of the queue records");
  await waitFor(() => entries.some((entry) => entry.msg === "removed the copies of a rejected message"), "removal of the maildir copy");
  expect(mailbox("bob")).toEqual([]);
  expect(queued()).toEqual([]);
  // The late plugin gets false too, once it returns.
  await waitFor(() => decisions().length === 1, "the slow route's decision");
  expect(decisions()).toEqual(["false"]);
  expect(sink!.messages).toEqual([]);
});

test("copy a reader moved to cur/ is removed", async () => {
  await start();
  const reply = send(["bob@local.test", "late@slow.test"]);
  // A mail reader takes the new message while the slow route still runs.
  const folder = path.join(dir, "mail/local.test/bob/Maildir");
  const [name] = await waitFor(() => mailbox("bob").length === 1 && mailbox("bob"), "the copy in new/");
  renameSync(path.join(folder, "new", name!), path.join(folder, "cur", `${name},S=70:2,S`));
  expect(await reply).toBe(451);
  await waitFor(() => entries.some((entry) => entry.msg === "removed the copies of a rejected message"), "removal of the copy");
  expect(readdirSync(path.join(folder, "cur"))).toEqual([]);
  expect(mailbox("bob")).toEqual([]);
});

test("failing first route stores nothing", async () => {
  await start();
  expect(await send(["fail@slow.test", "bob@local.test"])).toBe(451);
  expect(mailbox("bob")).toEqual([]);
  expect(entries.some((entry) => entry.msg === "removed the copies of a rejected message")).toBe(false);
});

test("failed mailbox removes the other mailbox's copy", async () => {
  await start({ mailboxes: ["bob", "dave"] });
  // dave's Maildir is a plain file, so his delivery fails.
  mkdirSync(path.join(dir, "mail/local.test/dave"), { recursive: true });
  writeFileSync(path.join(dir, "mail/local.test/dave/Maildir"), "not a folder");
  expect(await send(["bob@local.test", "dave@local.test"])).toBe(451);
  expect(mailbox("bob")).toEqual([]);
  expect(entries.some((entry) => entry.msg === "removed the copies of a rejected message")).toBe(true);
});

test("queue write past the deadline is removed", async () => {
  // Writing and syncing 8 MB takes far longer than 5 ms, so plugin-mx
  // returns after the deadline and must remove its records.
  await start({ hookTimeout: "5ms" });
  const body = `Subject: big\r\n\r\n${"x".repeat(998)}\r\n`.repeat(8 * 1024);
  expect(await send(["carol@far.test"], body)).toBe(451);
  await waitFor(() => entries.some((entry) => entry.msg === "message rejected after it was queued, records removed"), "removal of the queue records");
  expect(queued()).toEqual([]);
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(sink!.messages).toEqual([]);
});
