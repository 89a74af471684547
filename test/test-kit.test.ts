// The plugin test kit (@mailroom/testing) against the engine's own rules:
// routes at rcpt, DATA checks and storage, and the services the server
// registers for every plugin set.
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  definePlugin,
  deny,
  denySoft,
  ok,
  systemClock,
  TOKENS,
  type Clock,
  type DnsResolver,
  type MessageInjector,
  type PluginHooks,
} from "@mailroom/core";
import {
  captureLogs,
  memoryStore,
  startTestServer,
  StaticDnsResolver,
  TestClock,
  testPlugin,
  testPlugins,
} from "@mailroom/testing";
import { afterEach, describe, expect, test } from "vitest";
import { startDns, type DnsFixture } from "./mx-kit.js";

/** Registers the routes "box" and "spare", accepts every recipient with ok() and no route, and answers OK at queue. */
const boxStore = definePlugin({
  name: "box-store",
  setup({ registerRoute }) {
    registerRoute("box");
    registerRoute("spare");
    return { rcpt: () => ok(), queue: () => ok() };
  },
});

/** Accepts every recipient on a route that no plugin registered. */
const unrouted = definePlugin({
  name: "unrouted",
  setup: () => ({ rcpt: () => ok({ route: "nowhere" }) }),
});

/**
 * Puts recipients with the local part "later" on the route "second" and
 * returns a 452 denySoft at queue for them, after calling `beforeFailing`.
 */
function failingSecondRoute(beforeFailing: () => void = () => undefined) {
  return definePlugin({
    name: "failing-store",
    setup({ registerRoute }) {
      registerRoute("second");
      return {
        rcpt: ({ address }) => (address.local === "later" ? ok({ route: "second" }) : undefined),
        queue: () => {
          beforeFailing();
          return denySoft({ code: 452, enhanced: "4.3.1", message: "Disk full" });
        },
      };
    },
  });
}

/** Accepts every recipient with ok() but registers no route of its own. */
const routeless = definePlugin({
  name: "routeless",
  setup: () => ({ rcpt: () => ok() }),
});

describe("test kit setup", () => {
  test("logger option receives plugin logs", async () => {
    const chatty = definePlugin({
      name: "chatty",
      setup: ({ logger }) => ({
        mail: ({ address }) => {
          logger.info({ sender: address?.address }, "sender seen");
          return undefined;
        },
      }),
    });
    const capture = captureLogs("info");
    const harness = await testPlugin(chatty, {}, { logger: capture.logger });
    await harness.session().mail("a@sender.example");
    await harness.close();
    const seen = capture.records.filter((record) => record.msg === "sender seen");
    expect(seen).toHaveLength(1);
    expect(seen[0]!.sender).toBe("a@sender.example");
    expect(seen[0]!.plugin).toBe("chatty");
  });

  test("unknown hook name is rejected", async () => {
    let closed = 0;
    const misspelled = definePlugin({
      name: "misspelled",
      setup: () => ({ rcp: () => ok(), close: () => void (closed += 1) }) as PluginHooks,
    });
    await expect(testPlugin(misspelled)).rejects.toThrow(/^plugin misspelled returned a handler for unknown hook "rcp"; hooks are connect, /);
    expect(closed).toBe(1);
  });

  test("setup past setupTimeout is rejected", async () => {
    const stuck = definePlugin({ name: "stuck", setup: () => new Promise<PluginHooks>(() => undefined) });
    const started = Date.now();
    await expect(testPlugin(stuck, {}, { config: { server: { setupTimeout: 50 } } })).rejects.toThrow(
      "plugin stuck failed to start: setup did not finish within 50 ms (server.setupTimeout)",
    );
    expect(Date.now() - started).toBeLessThan(5000);
  });

  test("options without a schema are rejected", async () => {
    const plain = definePlugin({ name: "plain", setup: () => ({}) });
    await expect(testPlugin(plain, { extra: true })).rejects.toThrow("plugin plain takes no options");
  });

  test("failing close still closes the others", async () => {
    const closed: string[] = [];
    const closing = (name: string, fail: boolean) =>
      definePlugin({
        name,
        setup: () => ({
          close() {
            closed.push(name);
            if (fail) throw new Error(`${name} close failed`);
          },
        }),
      });
    const harness = await testPlugins([closing("first", false), closing("second", false), closing("last", true)]);
    await harness.close();
    expect(closed).toEqual(["last", "second", "first"]);
    expect(existsSync(harness.spoolDir)).toBe(false);
  });
});

describe("test kit rcpt", () => {
  test("ok without route uses the first registered route", async () => {
    const harness = await testPlugin(boxStore);
    const session = harness.session();
    await session.mail("a@sender.example");
    const call = await session.rcpt("x@dest.example");
    expect(call.verdict).toBe("OK");
    expect(call.code).toBe(250);
    expect(session.transaction!.recipients.map((recipient) => recipient.route)).toEqual(["box"]);
    expect(session.transaction!.recipients[0]!.acceptedBy).toBe("box-store");
    expect((await session.data("Subject: x\r\n\r\nx\r\n")).code).toBe(250);
    await harness.close();
  });

  test("unregistered route gets 451 at rcpt", async () => {
    const harness = await testPlugin(unrouted);
    const session = harness.session();
    await session.mail("a@sender.example");
    const call = await session.rcpt("x@dest.example");
    expect(call.verdict).toBe("OK");
    expect(call.code).toBe(451);
    expect(call.enhanced).toBe("4.3.0");
    expect(session.transaction!.recipients).toEqual([]);
    await harness.close();
  });

  test("ok from a plugin without routes gets 451", async () => {
    const harness = await testPlugin(routeless);
    const session = harness.session();
    await session.mail("a@sender.example");
    expect((await session.rcpt("x@dest.example")).code).toBe(451);
    expect(session.transaction!.recipients).toEqual([]);
    await harness.close();
  });

  test("maxRecipients gets 452 without calling the hook", async () => {
    let calls = 0;
    const counting = definePlugin({
      name: "counting",
      setup({ registerRoute }) {
        registerRoute("box");
        return {
          rcpt: () => {
            calls += 1;
            return ok();
          },
        };
      },
    });
    const harness = await testPlugin(counting, {}, { config: { server: { limits: { maxRecipients: 2 } } } });
    const session = harness.session();
    await session.mail("a@sender.example");
    expect((await session.rcpt("one@dest.example")).code).toBe(250);
    expect((await session.rcpt("two@dest.example")).code).toBe(250);
    const third = await session.rcpt("three@dest.example");
    expect(third.code).toBe(452);
    expect(third.enhanced).toBe("4.5.3");
    expect(third.verdict).toBe("CONT");
    expect(calls).toBe(2);
    await harness.close();
  });
});

describe("test kit data", () => {
  test("data without recipients gets 554 and fires no hook", async () => {
    let dataCalls = 0;
    const watcher = definePlugin({
      name: "watcher",
      setup: () => ({
        data: () => {
          dataCalls += 1;
          return undefined;
        },
      }),
    });
    const harness = await testPlugin(watcher);
    const session = harness.session();
    await session.mail("a@sender.example");
    const call = await session.data("Subject: x\r\n\r\nx\r\n");
    expect(call.code).toBe(554);
    expect(call.enhanced).toBe("5.5.1");
    expect(dataCalls).toBe(0);
    await harness.close();
  });

  test("bare LF is rejected as in strict mode", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin);
    const session = harness.session();
    await session.mail("a@sender.example");
    await session.rcpt("x@dest.example");
    const call = await session.data("Subject: x\n\nbare\n");
    expect(call.code).toBe(554);
    expect(call.enhanced).toBe("5.6.0");
    expect(call.verdict).toBe("CONT");
    expect(store.messages).toEqual([]);
    await harness.close();
  });

  test("normalize mode stores CRLF line ends", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin, {}, { config: { server: { lineEndings: "normalize" } } });
    const session = harness.session();
    await session.mail("a@sender.example");
    await session.rcpt("x@dest.example");
    const call = await session.data("Subject: x\n\nbare\n");
    expect(call.code).toBe(250);
    expect(call.message).toBe(`Message accepted as ${session.transaction!.id}`);
    expect(store.messages).toHaveLength(1);
    expect(store.messages[0]!.content.toString("latin1").endsWith("Subject: x\r\n\r\nbare\r\n")).toBe(true);
    await harness.close();
  });

  test("message over maxMessageSize gets 552", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin, {}, { config: { server: { limits: { maxMessageSize: 64 } } } });
    const session = harness.session();
    await session.mail("a@sender.example");
    await session.rcpt("x@dest.example");
    const call = await session.data(`Subject: x\r\n\r\n${"y".repeat(100)}\r\n`);
    expect(call.code).toBe(552);
    expect(store.messages).toEqual([]);
    await harness.close();
  });

  test("stored copy carries the trace headers", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin, {}, { config: { server: { hostname: "mx.kit.test" } } });
    const session = harness.session();
    await session.mail("a@sender.example");
    await session.rcpt("x@dest.example");
    expect((await session.data("Subject: x\r\n\r\nhello\r\n")).verdict).toBe("OK");
    const [stored] = store.messages;
    expect(stored!.sender).toBe("a@sender.example");
    expect(stored!.recipients).toEqual(["x@dest.example"]);
    expect(stored!.route).toBe("memory");
    const text = stored!.content.toString("utf8");
    expect(text.startsWith("Return-Path: <a@sender.example>\r\nReceived: from client.example")).toBe(true);
    expect(text).toContain("by mx.kit.test");
    expect(text.endsWith("Subject: x\r\n\r\nhello\r\n")).toBe(true);
    await harness.close();
  });

  test("more than 100 Received headers is a loop", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin);
    const session = harness.session();
    await session.mail("a@sender.example");
    await session.rcpt("x@dest.example");
    const hops = (count: number) => "Received: from hop.example\r\n".repeat(count);
    const looping = await session.data(`${hops(101)}Subject: x\r\n\r\nx\r\n`);
    expect(looping.code).toBe(554);
    expect(looping.enhanced).toBe("5.4.6");
    expect(store.messages).toEqual([]);
    await session.mail("a@sender.example");
    await session.rcpt("x@dest.example");
    expect((await session.data(`${hops(100)}RECEIVED: from hop.example\r\n\r\nx\r\n`)).code).toBe(554);
    await session.mail("a@sender.example");
    await session.rcpt("x@dest.example");
    expect((await session.data(`${hops(100)}Subject: x\r\n\r\nx\r\n`)).code).toBe(250);
    expect(store.messages).toHaveLength(1);
    await harness.close();
  });

  test("failed later route removes the earlier copy", async () => {
    const first = memoryStore({ route: "first", name: "first-store" });
    const failing = failingSecondRoute();
    const harness = await testPlugins([failing, first.plugin]);
    const session = harness.session();
    await session.mail("a@sender.example");
    await session.rcpt("early@dest.example");
    await session.rcpt("later@dest.example");
    const call = await session.data("Subject: x\r\n\r\nx\r\n");
    expect(call.verdict).toBe("DENYSOFT");
    expect(call.code).toBe(452);
    // The accepted promise settles after the queue calls return.
    await new Promise((resolve) => setImmediate(resolve));
    expect(first.messages).toEqual([]);
    await harness.close();
  });

  test("rejected copy already taken out keeps the others", async () => {
    const first = memoryStore({ route: "first", name: "first-store" });
    // A test that takes the new copy out of messages before the engine rejects it.
    const failing = failingSecondRoute(() => first.messages.pop());
    const harness = await testPlugins([failing, first.plugin]);
    const accepted = harness.session();
    await accepted.mail("a@sender.example");
    await accepted.rcpt("early@dest.example");
    expect((await accepted.data("Subject: kept\r\n\r\nx\r\n")).code).toBe(250);
    const acceptedId = accepted.transaction!.id;

    const rejected = harness.session();
    await rejected.mail("a@sender.example");
    await rejected.rcpt("early@dest.example");
    await rejected.rcpt("later@dest.example");
    expect((await rejected.data("Subject: rejected\r\n\r\nx\r\n")).code).toBe(452);
    // The accepted promise settles after the queue calls return.
    await new Promise((resolve) => setImmediate(resolve));
    expect(first.messages.map((message) => message.id)).toEqual([acceptedId]);
    await harness.close();
  });
});

describe("test kit services", () => {
  let dns: DnsFixture | undefined;
  afterEach(async () => {
    await dns?.close();
    dns = undefined;
  });

  /** Creates a plugin that resolves the Clock and the DnsResolver in setup, as plugin-mx does. */
  function servicesPlugin(found: { clock?: Clock; dns?: DnsResolver }) {
    return definePlugin({
      name: "services",
      setup({ container }) {
        found.clock = container.resolve<Clock>(TOKENS.Clock);
        found.dns = container.resolve<DnsResolver>(TOKENS.DnsResolver);
        return {};
      },
    });
  }

  test("clock defaults to the system clock", async () => {
    const found: { clock?: Clock } = {};
    const harness = await testPlugin(servicesPlugin(found));
    expect(found.clock).toBe(systemClock);
    await harness.close();
  });

  test("given clock and resolver are used", async () => {
    const found: { clock?: Clock; dns?: DnsResolver } = {};
    const clock = new TestClock();
    const resolver = new StaticDnsResolver({ mx: { "dest.example": [{ exchange: "mx.dest.example", priority: 10 }] } });
    const harness = await testPlugin(servicesPlugin(found), {}, { clock, dns: resolver });
    expect(found.clock).toBe(clock);
    expect(await found.dns!.resolveMx("dest.example")).toEqual({
      status: "found",
      records: [{ exchange: "mx.dest.example", priority: 10 }],
    });
    await harness.close();
  });

  test("static resolver ignores case and trailing dot", async () => {
    const resolver = new StaticDnsResolver({
      mx: { "Dest.Example.": [{ exchange: "mx.dest.example", priority: 10 }] },
      a: { "MX.dest.example": ["192.0.2.25"] },
    });
    expect(await resolver.resolveMx("dest.example")).toEqual({
      status: "found",
      records: [{ exchange: "mx.dest.example", priority: 10 }],
    });
    expect(await resolver.resolveMx("DEST.example.")).toEqual({
      status: "found",
      records: [{ exchange: "mx.dest.example", priority: 10 }],
    });
    expect(await resolver.resolve4("mx.dest.example")).toEqual({ status: "found", records: ["192.0.2.25"] });
    expect(await resolver.resolve4("other.example")).toEqual({ status: "nxdomain" });
  });

  test("default resolver fails every lookup with advice", async () => {
    const found: { dns?: DnsResolver } = {};
    const harness = await testPlugin(servicesPlugin(found));
    const lookups = [
      found.dns!.resolveMx("dest.example"),
      found.dns!.resolve4("mx.dest.example"),
      found.dns!.resolve6("mx.dest.example"),
      found.dns!.resolvePtr("192.0.2.1"),
    ];
    for (const lookup of lookups) {
      await expect(lookup).rejects.toThrow(/the test has no DNS resolver\. Pass \{ dns: new StaticDnsResolver/);
    }
    await expect(found.dns!.resolveMx("dest.example")).rejects.toMatchObject({ code: "MAILROOM_TEST_NO_DNS" });
    await harness.close();
  });

  test("configured nameservers are queried", async () => {
    dns = await startDns({ "dest.example": { MX: [[10, "mx.dest.example"]] } });
    const found: { dns?: DnsResolver } = {};
    const harness = await testPlugin(servicesPlugin(found), {}, { config: { server: { dns: { nameservers: [dns.nameserver] } } } });
    expect(await found.dns!.resolveMx("dest.example")).toEqual({
      status: "found",
      records: [{ exchange: "mx.dest.example", priority: 10 }],
    });
    expect(dns.queries).toEqual([{ name: "dest.example", type: "MX" }]);
    await harness.close();
  });

  test("injector runs the kit's plugins", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin);
    const injector = harness.container.resolve<MessageInjector>(TOKENS.Injector);
    const result = await injector.inject({ sender: "", recipients: ["x@dest.example"], content: "Subject: bounce\r\n\r\nx\r\n" });
    expect(result.stored).toBe(true);
    expect(store.messages.map((message) => message.sender)).toEqual([""]);
    expect(result.message).toBe(`Message accepted as ${store.messages[0]!.id}`);
    await harness.close();
  });

  test("injected mail loop gets 554", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin);
    const injector = harness.container.resolve<MessageInjector>(TOKENS.Injector);
    const content = `${"Received: from hop.example\r\n".repeat(101)}Subject: bounce\r\n\r\nx\r\n`;
    const result = await injector.inject({ sender: "", recipients: ["x@dest.example"], content });
    expect(result.stored).toBe(false);
    expect(result.code).toBe(554);
    expect(result.enhanced).toBe("5.4.6");
    expect(result.accepted).toEqual(["x@dest.example"]);
    expect(store.messages).toEqual([]);
    await harness.close();
  });

  test("injected bare LF message is stored with CRLF", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin);
    const injector = harness.container.resolve<MessageInjector>(TOKENS.Injector);
    const result = await injector.inject({ sender: "", recipients: ["x@dest.example"], content: "Subject: bounce\n\nnon-ASCII body: é\n" });
    expect(result.stored).toBe(true);
    const text = store.messages[0]!.content.toString("utf8");
    expect(text.endsWith("Subject: bounce\r\n\r\nnon-ASCII body: é\r\n")).toBe(true);
    // Only the header block decides SMTPUTF8, and it ends at the first empty line whatever its line ends.
    expect(text).toContain(" with ESMTP id ");
    await harness.close();
  });

  test("injected non-ASCII header block is SMTPUTF8", async () => {
    const store = memoryStore();
    const harness = await testPlugin(store.plugin);
    const injector = harness.container.resolve<MessageInjector>(TOKENS.Injector);
    const result = await injector.inject({ sender: "", recipients: ["x@dest.example"], content: "Subject: é\n\nbody\n" });
    expect(result.stored).toBe(true);
    expect(store.messages[0]!.content.toString("utf8")).toContain(" with UTF8SMTP id ");
    await harness.close();
  });
});

describe("test kit logs", () => {
  test("captureLogs keeps text and records", () => {
    const capture = captureLogs("info");
    const { records } = capture;
    capture.logger.debug("below the level");
    capture.logger.info({ id: "c1" }, "first");
    capture.logger.child({ conn: "c2" }).warn("second");
    expect(capture.lines).toHaveLength(2);
    expect(JSON.parse(capture.lines[0]!)).toMatchObject({ level: 30, id: "c1", msg: "first" });
    expect(records).toHaveLength(2);
    expect(records[1]).toMatchObject({ level: 40, conn: "c2", msg: "second" });
    expect(capture.entries()).toEqual(records);
  });
});

describe("test kit transactions", () => {
  /** Creates a plugin that rejects senders at spam.example, stores every recipient, and records each reset and queue call. */
  function recorderPlugin(events: string[]) {
    return definePlugin({
      name: "recorder",
      setup({ registerRoute }) {
        registerRoute("box");
        return {
          mail: ({ address }) => (address?.domain === "spam.example" ? deny() : undefined),
          rcpt: () => ok(),
          reset: ({ transaction }) => {
            events.push(`reset ${transaction?.sender?.address ?? "<>"}`);
          },
          queue: ({ transaction, recipients }) => {
            const to = recipients.map((recipient) => recipient.address.address).join(",");
            events.push(`queue ${transaction.sender?.address ?? "<>"} to ${to}`);
            return ok();
          },
        };
      },
    });
  }

  test("resets fire as on a real server", async () => {
    // The server loads the plugin file, which exports the plugin that the test put on globalThis.
    const serverEvents: string[] = [];
    const dir = await mkdtemp(path.join(tmpdir(), "kit-transactions-"));
    const global = globalThis as { kitRecorder?: unknown };
    global.kitRecorder = recorderPlugin(serverEvents);
    await writeFile(path.join(dir, "recorder.ts"), "export default (globalThis as any).kitRecorder;\n");
    const server = await startTestServer({ server: { hostname: "mx.example.test" }, plugins: [{ use: "./recorder.ts" }] }, { dir });
    const client = await server.connect();
    expect((await client.command("EHLO client.example")).code).toBe(250);
    expect((await client.command("MAIL FROM:<one@mail.example>")).code).toBe(250);
    expect((await client.command("RCPT TO:<a@dest.example>")).code).toBe(250);
    expect((await client.data("Subject: 1\r\n\r\nx\r\n")).code).toBe(250);
    expect((await client.command("MAIL FROM:<bulk@spam.example>")).code).toBe(550);
    expect((await client.command("MAIL FROM:<two@mail.example>")).code).toBe(250);
    expect((await client.command("RSET")).code).toBe(250);
    expect((await client.command("MAIL FROM:<three@mail.example>")).code).toBe(250);
    expect((await client.command("QUIT")).code).toBe(221);
    await client.closed();
    await server.stop();
    delete global.kitRecorder;
    await rm(dir, { recursive: true, force: true });

    const kitEvents: string[] = [];
    const harness = await testPlugin(recorderPlugin(kitEvents));
    const session = harness.session();
    await session.mail("one@mail.example");
    await session.rcpt("a@dest.example");
    expect((await session.data("Subject: 1\r\n\r\nx\r\n")).code).toBe(250);
    expect((await session.mail("bulk@spam.example")).code).toBe(550);
    await session.mail("two@mail.example");
    await session.reset();
    await session.mail("three@mail.example");
    await session.disconnect();
    await harness.close();

    expect(serverEvents).toEqual([
      "queue one@mail.example to a@dest.example",
      "reset one@mail.example",
      "reset two@mail.example",
      "reset three@mail.example",
    ]);
    expect(kitEvents).toEqual(serverEvents);
  });

  test("rejected sender opens no transaction", async () => {
    const events: string[] = [];
    const harness = await testPlugin(recorderPlugin(events));
    const session = harness.session();
    await session.mail("one@mail.example");
    await session.rcpt("a@dest.example");
    expect((await session.data("Subject: 1\r\n\r\nx\r\n")).code).toBe(250);
    expect(session.transaction?.sender?.address).toBe("one@mail.example");
    expect((await session.mail("bulk@spam.example")).code).toBe(550);
    expect(session.transaction).toBeUndefined();
    await expect(session.data("Subject: 2\r\n\r\ny\r\n")).rejects.toThrow(/open transaction/);
    expect(events).toEqual(["queue one@mail.example to a@dest.example", "reset one@mail.example"]);
    await harness.close();
  });

  test("config hookTimeout is the deadline", async () => {
    const slow = definePlugin({
      name: "slow",
      setup: () => ({ mail: () => new Promise((resolve) => setTimeout(() => resolve(ok()), 500)) }),
    });
    const harness = await testPlugin(slow, {}, { config: { server: { hookTimeout: "50ms" } } });
    const call = await harness.session().mail("a@sender.example");
    expect(call.verdict).toBe("ERROR");
    expect(call.code).toBe(451);
    await harness.close();
  });
});

describe("test kit servers", () => {
  test("YAML text without listen gets a free port", async () => {
    const text = "server:\n  hostname: mx.example.test\nplugins: []\n";
    const first = await startTestServer(text);
    const second = await startTestServer(text);
    expect(first.host).toBe("127.0.0.1");
    expect(first.port).not.toBe(2525);
    expect(second.port).not.toBe(first.port);
    const client = await second.connect();
    expect(client.greeting.code).toBe(220);
    client.close();
    await second.stop();
    await first.stop();
  });

  test("YAML text keeps its own listen", async () => {
    const server = await startTestServer('server:\n  listen: ["127.0.0.1:0", "127.0.0.1:0"]\nplugins: []\n');
    expect(server.addresses).toHaveLength(2);
    await server.stop();
  });
});
