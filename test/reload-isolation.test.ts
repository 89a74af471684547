// Each plugin set (the start and every reload) has a DI container of its
// own: a rejected reload leaves nothing registered or running, and a
// successful one drops the services of plugins it removed.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig, MailroomServer, TOKENS, type OutboundQueue, type UserDirectory } from "@mailroom/core";
import { queueRetry } from "@mailroom/plugin-mx";
import { SmtpTestClient } from "@mailroom/testing";
import { pino } from "pino";
import { stringify } from "yaml";
import { afterEach, beforeEach, expect, test } from "vitest";
import { PLUGINS } from "../plugins/relay/test/helpers.js";
import { startRemoteMx, waitFor } from "./mx-kit.js";

const MAILDIR = fileURLToPath(new URL("../plugins/maildir/src/index.ts", import.meta.url));
const MX = fileURLToPath(new URL("../plugins/mx/src/index.ts", import.meta.url));

const EVENTS = Symbol.for("mailroom.test.reloadEvents");
const PROBE = Symbol.for("mailroom.test.Probe");
/** Where a probe with `holdStart` puts the function that lets its start() finish. */
const RELEASE_START = Symbol.for("mailroom.test.releaseStart");

/**
 * Records setup, start, close and the ticks of a timer started in start()
 * in a list shared with the test, registers a service with its generation,
 * and answers MAIL with it. `delay` makes setup take that long, and
 * `failStart` makes start() throw. With `holdStart`, start() waits until
 * the test calls the function it left in globalThis, then records
 * "started".
 */
const PROBE_PLUGIN = `
import { definePlugin, ok, z } from "@mailroom/core";

export default definePlugin({
  name: "probe",
  options: z.object({
    generation: z.number(),
    delay: z.number().default(0),
    failStart: z.boolean().default(false),
    holdStart: z.boolean().default(false),
  }),
  async setup({ options, container }) {
    const events = (globalThis[Symbol.for("mailroom.test.reloadEvents")] ??= []);
    const generation = options.generation;
    events.push("setup " + generation);
    await new Promise((resolve) => setTimeout(resolve, options.delay));
    container.register(Symbol.for("mailroom.test.Probe"), { useValue: { generation } });
    events.push("ready " + generation);
    let timer;
    return {
      async start() {
        events.push("start " + generation);
        if (options.holdStart) {
          await new Promise((resolve) => (globalThis[Symbol.for("mailroom.test.releaseStart")] = resolve));
          events.push("started " + generation);
        }
        if (options.failStart) throw new Error("no socket");
        timer = setInterval(() => events.push("tick " + generation), 5);
      },
      mail: () => ok({ message: "generation " + generation }),
      close() {
        clearInterval(timer);
        events.push("close " + generation);
      },
    };
  },
});
`;

/** An organisation's directory, as in docs/plugins.md: a map from domain to users. */
const DIRECTORY_PLUGIN = `
import { definePlugin, TOKENS, z } from "@mailroom/core";

export default definePlugin({
  name: "company-directory",
  options: z.object({ users: z.record(z.string(), z.array(z.string())) }),
  setup({ options, container }) {
    const lookup = (local, domain) =>
      (options.users[domain] ?? []).includes(local.toLowerCase()) ? { mailbox: local.toLowerCase(), domain } : null;
    container.register(TOKENS.UserDirectory, {
      useValue: {
        domains: () => Object.keys(options.users),
        lookup,
        findLocalPart: (local) => Object.keys(options.users).flatMap((domain) => lookup(local, domain) ?? []),
      },
    });
    return {};
  },
});
`;

let dir: string;
let file: string;
let server: MailroomServer | undefined;
const cleanup: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-reload-isolation-"));
  file = path.join(dir, "mailroom.yaml");
  await writeFile(path.join(dir, "probe.ts"), PROBE_PLUGIN);
  await writeFile(path.join(dir, "company-directory.ts"), DIRECTORY_PLUGIN);
  (globalThis as Record<symbol, unknown>)[EVENTS] = [];
});

afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
  await server?.close();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

function events(): string[] {
  return (globalThis as Record<symbol, string[]>)[EVENTS] ?? [];
}

/** Returns the events other than timer ticks, in order. */
function lifecycle(): string[] {
  return events().filter((event) => !event.startsWith("tick "));
}

function ticks(generation: number): number {
  return events().filter((event) => event === `tick ${generation}`).length;
}

type Entry = { use: string; with?: Record<string, unknown> };

function writeConfig(plugins: Entry[], server: Record<string, unknown> = {}): Promise<void> {
  return writeFile(file, stringify({ server: { listen: ["127.0.0.1:0"], ...server }, plugins }));
}

const relay = (options: Record<string, unknown> = {}): Entry => ({ use: PLUGINS.relay, with: options });
const maildir = (domain: string, mailboxes: string[]): Entry => ({
  use: MAILDIR,
  with: { root: "./mail", domains: { [domain]: { mailboxes } } },
});
const probe = (generation: number, delay = 0, failStart = false, holdStart = false): Entry => ({
  use: "./probe.ts",
  with: { generation, delay, failStart, holdStart },
});

/** Lets the start() of a probe with `holdStart` finish, once it has begun. */
async function releaseStart(): Promise<void> {
  const store = globalThis as Record<symbol, (() => void) | undefined>;
  await waitFor(() => store[RELEASE_START] !== undefined, "the held start()");
  store[RELEASE_START]!();
  store[RELEASE_START] = undefined;
}

async function start(): Promise<number> {
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  return (await server.listen())[0]!.port;
}

/** Opens a session, sends MAIL and each RCPT; returns the MAIL reply's text and each RCPT's codes. */
async function session(port: number, recipients: string[]): Promise<{ mail: string; rcpt: string[] }> {
  const client = await SmtpTestClient.connect(port);
  try {
    await client.command("EHLO client.test");
    const mail = await client.command("MAIL FROM:<a@sender.test>");
    const rcpt: string[] = [];
    for (const recipient of recipients) {
      const reply = await client.command(`RCPT TO:<${recipient}>`);
      rcpt.push(`${reply.code} ${reply.enhanced ?? ""}`.trim());
    }
    await client.command("QUIT");
    return { mail: mail.lines[0] ?? "", rcpt };
  } finally {
    client.close();
  }
}

const BAD_ENTRIES: [string, Entry, RegExp, string?][] = [
  ["invalid options", { use: PLUGINS.relay, with: { allowAuthenticated: "maybe" } }, /plugins\[3\]\.with\.allowAuthenticated/],
  ["a module that cannot be loaded", { use: "./missing-plugin.ts" }, /plugins\[3\]\.use: cannot load plugin/],
  ["a module without a plugin", { use: "./not-a-plugin.ts" }, /does not export a plugin/],
  ["a setup that throws", { use: "./throws.ts" }, /plugin throws failed to start: no database/],
  ["an unknown hook", { use: "./unknown-hook.ts" }, /unknown hook "recieve"/, "close unknown-hook"],
];

test.each(BAD_ENTRIES)(
  "rejected reload with %s in a later entry changes nothing",
  async (_, bad, error, closedToo) => {
    await writeFile(path.join(dir, "not-a-plugin.ts"), "export default { hello: 1 };\n");
    await writeFile(
      path.join(dir, "throws.ts"),
      'import { definePlugin } from "@mailroom/core";\n' +
        'export default definePlugin({ name: "throws", setup() { throw new Error("no database"); } });\n',
    );
    await writeFile(
      path.join(dir, "unknown-hook.ts"),
      'import { definePlugin } from "@mailroom/core";\n' +
        "const events = (globalThis[Symbol.for(\"mailroom.test.reloadEvents\")] ??= []);\n" +
        'export default definePlugin({ name: "unknown-hook", setup: () => ({ recieve() {}, close() { events.push("close unknown-hook"); } }) });\n',
    );
    await writeConfig([relay(), maildir("live.test", ["alice"]), probe(1)]);
    const port = await start();
    expect((await session(port, ["alice@live.test"])).rcpt).toEqual(["250 2.1.5"]);
    await waitFor(() => ticks(1) > 0, "the first set's timer");

    await writeConfig([relay(), maildir("renamed.test", ["alice"]), probe(2), bad]);
    await expect(server!.reload()).rejects.toThrow(error);

    // Routing: the old domain still delivers, the rejected config's one is not local.
    const after = await session(port, ["alice@live.test", "alice@renamed.test"]);
    expect(after).toEqual({ mail: "2.1.0 generation 1", rcpt: ["250 2.1.5", "550 5.7.1"] });
    // Services: those of the running set, none of the rejected one.
    const directory = server!.container.resolve<UserDirectory>(TOKENS.UserDirectory);
    expect(await directory.domains()).toEqual(["live.test"]);
    expect(server!.container.resolve<{ generation: number }>(PROBE).generation).toBe(1);
    // Timers: the rejected set was closed without being started; the running one goes on.
    const expected = ["setup 1", "ready 1", "start 1", "setup 2", "ready 2", ...(closedToo ? [closedToo] : []), "close 2"];
    expect(lifecycle()).toEqual(expected);
    const before = ticks(1);
    await waitFor(() => ticks(1) > before + 2, "the first set's timer after the reload");
    expect(ticks(2)).toBe(0);
  },
);

test("setup that finishes after a rejected reload is closed unstarted", async () => {
  await writeConfig([relay(), maildir("live.test", ["alice"])]);
  const port = await start();

  await writeConfig([relay(), maildir("renamed.test", ["alice"]), probe(2, 400)], { setupTimeout: "100ms" });
  await expect(server!.reload()).rejects.toThrow(/plugin probe failed to start: setup did not finish within 100 ms/);
  await waitFor(() => lifecycle().includes("close 2"), "the late setup's close");

  expect(lifecycle()).toEqual(["setup 2", "ready 2", "close 2"]);
  expect(server!.container.isRegistered(PROBE, true)).toBe(false);
  expect((await session(port, ["alice@live.test"])).rcpt).toEqual(["250 2.1.5"]);
});

test("start that fails rejects the reload", async () => {
  await writeConfig([probe(1)]);
  const port = await start();

  await writeConfig([probe(2), probe(3, 0, true)]);
  await expect(server!.reload()).rejects.toThrow(/plugin probe: start\(\) failed: no socket/);

  expect((await session(port, [])).mail).toBe("2.1.0 generation 1");
  expect(server!.container.resolve<{ generation: number }>(PROBE).generation).toBe(1);
  const reloaded = ["setup 2", "ready 2", "setup 3", "ready 3", "start 2", "start 3", "close 3", "close 2"];
  expect(lifecycle()).toEqual(["setup 1", "ready 1", "start 1", ...reloaded]);
  const before = ticks(1);
  await waitFor(() => ticks(1) > before + 2, "the first set's timer after the reload");
});

test("reload that removes a directory plugin removes its directory", async () => {
  const directory: Entry = { use: "./company-directory.ts", with: { users: { "corp.test": ["carol"] } } };
  await writeConfig([relay(), directory, maildir("own.test", ["alice"]), probe(1)]);
  const port = await start();
  expect((await session(port, ["carol@corp.test", "alice@own.test"])).rcpt).toEqual(["250 2.1.5", "550 5.7.1"]);

  await writeConfig([relay(), maildir("own.test", ["alice"])]);
  await server!.reload();

  expect((await session(port, ["carol@corp.test", "alice@own.test"])).rcpt).toEqual(["550 5.7.1", "250 2.1.5"]);
  const registered = server!.container.resolve<UserDirectory>(TOKENS.UserDirectory);
  expect(await registered.domains()).toEqual(["own.test"]);
  expect(server!.container.isRegistered(PROBE, true)).toBe(false);
  expect(lifecycle()).toEqual(["setup 1", "ready 1", "start 1", "close 1"]);
});

test("reload asked for while another runs waits for it", async () => {
  await writeConfig([probe(1)]);
  const port = await start();

  await writeConfig([probe(2, 400)]);
  const slow = server!.reload();
  // The slow reload has read its file once its setup began.
  await waitFor(() => lifecycle().includes("setup 2"), "the slow reload's setup");
  await writeConfig([probe(3)]);
  const fast = server!.reload();
  await Promise.all([slow, fast]);

  expect((await session(port, [])).mail).toBe("2.1.0 generation 3");
  expect(server!.container.resolve<{ generation: number }>(PROBE).generation).toBe(3);
  // The second reload read the file only after the first had finished.
  const order = lifecycle();
  expect(order.indexOf("setup 3")).toBeGreaterThan(order.indexOf("start 2"));
  expect(order).toEqual(["setup 1", "ready 1", "start 1", "setup 2", "ready 2", "start 2", "close 1", "setup 3", "ready 3", "start 3", "close 2"]);
});

test("reloads asked for while one waits share its result", async () => {
  await writeConfig([probe(1)]);
  await start();

  await writeConfig([probe(2, 300)]);
  const running = server!.reload();
  await waitFor(() => lifecycle().includes("setup 2"), "the first reload's setup");
  await writeConfig([probe(3)]);
  const waiting = server!.reload();
  expect(server!.reload()).toBe(waiting);
  await Promise.all([running, waiting]);

  expect(lifecycle().filter((event) => event.startsWith("setup"))).toEqual(["setup 1", "setup 2", "setup 3"]);
  expect(server!.container.resolve<{ generation: number }>(PROBE).generation).toBe(3);
});

test("stop during a reload closes the reload's plugins unstarted", async () => {
  await writeConfig([probe(1)]);
  await start();

  await writeConfig([probe(2, 300)]);
  const reload = server!.reload();
  await waitFor(() => lifecycle().includes("setup 2"), "the reload's setup");
  await server!.close();
  await expect(reload).rejects.toThrow(/stopped while the config was reloading, so the new plugins were closed/);
  await expect(server!.reload()).rejects.toThrow(/stopping, so the config was not reloaded/);

  expect(lifecycle()).toEqual(["setup 1", "ready 1", "start 1", "setup 2", "ready 2", "close 2", "close 1"]);
});

test("reload asked for while listen() starts the first set waits for that start", async () => {
  await writeConfig([probe(1, 0, false, true)]);
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  const listening = server.listen();
  await waitFor(() => lifecycle().includes("start 1"), "the first set's start()");

  // The window of a SIGHUP that arrives while the CLI's server.listen() starts the plugins.
  await writeConfig([probe(2)]);
  const reloaded = server.reload();
  await new Promise((resolve) => setTimeout(resolve, 300));
  // The reload has not read the config: it waits for the start in progress.
  expect(lifecycle()).toEqual(["setup 1", "ready 1", "start 1"]);

  await releaseStart();
  const port = (await listening)[0]!.port;
  await reloaded;

  expect(lifecycle()).toEqual(["setup 1", "ready 1", "start 1", "started 1", "setup 2", "ready 2", "start 2", "close 1"]);
  expect((await session(port, [])).mail).toBe("2.1.0 generation 2");
  // The set in service was started: its timer runs.
  await waitFor(() => ticks(2) > 2, "the second set's timer");
  const before = ticks(1);
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(ticks(1)).toBe(before);
});

test("reload asked for before listen() is started by listen()", async () => {
  await writeConfig([probe(1)]);
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  await writeConfig([probe(2)]);
  await server.reload();
  const port = (await server.listen())[0]!.port;

  expect(lifecycle()).toEqual(["setup 1", "ready 1", "setup 2", "ready 2", "close 1", "start 2"]);
  expect((await session(port, [])).mail).toBe("2.1.0 generation 2");
  await waitFor(() => ticks(2) > 2, "the second set's timer");
});

test("stop during first start never listens", async () => {
  await writeConfig([probe(1, 0, false, true)]);
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  const listening = server.listen();
  await waitFor(() => lifecycle().includes("start 1"), "the first set's start()");

  let stopped = false;
  const stopping = server.close().then(() => (stopped = true));
  await new Promise((resolve) => setTimeout(resolve, 100));
  expect(stopped).toBe(false);

  await releaseStart();
  await expect(listening).rejects.toThrow(/stopping, so it did not start listening/);
  await stopping;
  expect(server.addresses()).toEqual([]);
  expect(lifecycle()).toEqual(["setup 1", "ready 1", "start 1", "started 1", "close 1"]);
});

test("rejected reload never delivers through its own smarthost", async () => {
  let deferring = true;
  const old = await startRemoteMx({ rcpt: () => (deferring ? { code: 451, message: "4.3.0 try later" } : undefined) });
  cleanup.push(() => old.close());
  const rejected = await startRemoteMx();
  cleanup.push(() => rejected.close());
  const mx = (port: number, pollInterval: string) => ({
    use: MX,
    with: {
      queueDir: "./queue",
      retry: ["1h"],
      pollInterval,
      smarthost: { host: "127.0.0.1", port, tls: "none", allowLocal: true },
    },
  });
  const trusted = relay({ trustedNetworks: ["127.0.0.1/32"] });
  await writeConfig([trusted, mx(old.port, "1h")], { hostname: "mailroom.test" });
  const port = await start();

  // The first attempt is deferred, so the record waits in the queue for an hour.
  const client = await SmtpTestClient.connect(port);
  const replies = await client.send({ from: "a@sender.test", to: ["bob@remote.test"], message: "Subject: t\r\n\r\nx\r\n" });
  client.close();
  expect(replies.at(-1)?.code).toBe(250);
  const queue = server!.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  const [record] = await waitFor(async () => {
    const list = await queue.list();
    return list.length === 1 && list[0]!.attempts === 1 && list;
  }, "the deferred attempt");

  // The rejected config sends elsewhere and scans every 50 ms.
  await writeConfig([trusted, mx(rejected.port, "50ms"), { use: PLUGINS.relay, with: { allowAuthenticated: "maybe" } }], {
    hostname: "mailroom.test",
  });
  await expect(server!.reload()).rejects.toThrow(/allowAuthenticated/);

  // `mailroom queue retry --all` makes the record due without waking a scheduler,
  // so only a scan finds it: a scheduler of the rejected config would within 50 ms.
  expect(await queueRetry(await loadConfig(file), { all: true })).toBe(1);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  expect(rejected.connections).toBe(0);
  expect((await queue.list()).map((entry) => entry.id)).toEqual([record!.id]);

  // The running set's scheduler still delivers, through the old smarthost.
  deferring = false;
  expect(server!.container.resolve<OutboundQueue>(TOKENS.OutboundQueue)).toBe(queue);
  expect(await queue.retry(record!.id)).toBe(true);
  await waitFor(() => old.received.length === 1, "delivery through the old smarthost");
  expect(old.received[0]!.to).toEqual(["bob@remote.test"]);
  expect(rejected.connections).toBe(0);
});
