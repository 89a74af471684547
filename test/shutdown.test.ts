import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { captureLogs, SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";
import { SINK_PLUGIN } from "./fixtures/paths.js";

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-shutdown-"));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("shutdown lets a transaction in flight finish", async () => {
  const server = await startTestServer({ server: { shutdownTimeout: "10s" }, plugins: [{ use: SINK_PLUGIN }] }, { dir });
  const idle = await server.connect();
  const busy = await server.connect();
  await busy.command("EHLO client.test");
  await busy.command("MAIL FROM:<a@sender.test>");
  await busy.command("RCPT TO:<b@local.test>");
  expect((await busy.command("DATA")).code).toBe(354);
  busy.write("Subject: in flight\r\n\r\nfirst half ");

  const stopped = server.stop();

  const goodbye = await idle.read();
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await idle.closed();

  busy.write("second half\r\n.\r\n");
  const accepted = await busy.read();
  expect(accepted.code).toBe(250);
  expect((await busy.read()).code).toBe(421);
  await busy.closed();

  await stopped;
  await expect(SmtpTestClient.connect(server.port)).rejects.toThrow();
});

/** Starts a server on the sink plugin whose JSON log lines land in the returned list. */
async function startLogged(server: Record<string, unknown>, plugins: unknown[] = [{ use: SINK_PLUGIN }]) {
  const capture = captureLogs("info");
  const started = await startTestServer({ server, plugins }, { dir, logger: capture.logger });
  return { server: started, logs: capture.records };
}

/** Opens a session and runs EHLO, MAIL and one RCPT. */
async function openTransaction(server: TestServer): Promise<SmtpTestClient> {
  const client = await server.connect();
  expect((await client.command("EHLO client.test")).code).toBe(250);
  expect((await client.command("MAIL FROM:<a@sender.test>")).code).toBe(250);
  expect((await client.command("RCPT TO:<b@local.test>")).code).toBe(250);
  return client;
}

test("shutdown lets a transaction between MAIL and DATA finish", async () => {
  const server = await startTestServer(
    { server: { shutdownTimeout: "10s" }, plugins: [{ use: SINK_PLUGIN, with: { out: "out.eml" } }] },
    { dir },
  );
  const client = await openTransaction(server);

  const stopped = server.stop();

  const second = await client.command("RCPT TO:<c@local.test>");
  expect(second.code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  client.write("Subject: after SIGTERM\r\n\r\nbody\r\n.\r\n");
  const accepted = await client.read();
  expect(accepted.code).toBe(250);
  const goodbye = await client.read();
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;

  const stored = await readFile(path.join(dir, "out.eml"), "utf8");
  expect(stored).toContain("Subject: after SIGTERM");
});

test("shutdown closes a session after RSET ends its transaction", async () => {
  const server = await startTestServer({ server: { shutdownTimeout: "10s" }, plugins: [{ use: SINK_PLUGIN }] }, { dir });
  const client = await openTransaction(server);

  const stopped = server.stop();

  expect((await client.command("NOOP")).code).toBe(250);
  // A MAIL inside the open transaction is the usual protocol error, not the end of the session.
  const nested = await client.command("MAIL FROM:<c@sender.test>");
  expect(nested.code).toBe(503);
  expect(nested.enhanced).toBe("5.5.1");
  expect((await client.command("RSET")).code).toBe(250);
  const goodbye = await client.read();
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;
});

test("shutdown gives MAIL pipelined behind a command 421", async () => {
  const slow = path.join(dir, "slow-ehlo.ts");
  await writeFile(
    slow,
    'import { definePlugin } from "@mailroom/core";\n' +
      "export default definePlugin({ name: \"slow-ehlo\", setup: () => ({ ehlo: () => new Promise((resolve) => setTimeout(resolve, 300)) }) });\n",
  );
  const server = await startTestServer(
    { server: { shutdownTimeout: "10s" }, plugins: [{ use: slow }, { use: SINK_PLUGIN }] },
    { dir },
  );
  const client = await server.connect();
  client.write("EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n");
  await new Promise((resolve) => setTimeout(resolve, 100));

  const stopped = server.stop();

  expect((await client.read()).code).toBe(250);
  const goodbye = await client.read();
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;
});

test("shutdownTimeout cuts a stalled transaction and logs it", async () => {
  const { server, logs } = await startLogged({ shutdownTimeout: "300ms" });
  const client = await openTransaction(server);
  const started = Date.now();

  const stopped = server.stop();

  const goodbye = await client.read(5000);
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  await client.closed();
  await stopped;

  const cut = logs.filter((line) => line.msg === "shutdownTimeout passed; closing the connection with its transaction unfinished");
  expect(cut).toHaveLength(1);
  expect(cut[0]!.level).toBe(40);
  expect(cut[0]!.remote).toBe("127.0.0.1");
  expect(typeof cut[0]!.conn).toBe("string");
  expect(cut[0]!.txn).toBe(`${cut[0]!.conn}.1`);
  expect(cut[0]!.recipients).toBe(1);
  expect(cut[0]!.inData).toBe(false);
});

test("shutdownTimeout cuts a DATA transfer and logs it", async () => {
  const { server, logs } = await startLogged({ shutdownTimeout: "300ms" });
  const client = await openTransaction(server);
  expect((await client.command("DATA")).code).toBe(354);
  client.write("Subject: slow\r\n\r\nfirst half ");

  const stopped = server.stop();

  const goodbye = await client.read(5000);
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;

  const cut = logs.find((line) => line.msg === "shutdownTimeout passed; closing the connection with its transaction unfinished");
  expect(cut?.inData).toBe(true);
});

test("shutdownTimeout 0 closes a transaction at once", async () => {
  const server = await startTestServer({ server: { shutdownTimeout: 0 }, plugins: [{ use: SINK_PLUGIN }] }, { dir });
  const client = await openTransaction(server);
  const started = Date.now();

  const stopped = server.stop();

  const goodbye = await client.read(5000);
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;
  expect(Date.now() - started).toBeLessThan(2000);
});

const STATE = Symbol.for("mailroom.test.shutdownLifecycle");

/**
 * Records its hook calls and close() in a list shared with the test (rcpt
 * only when held). The hooks named in `hold` wait until the test opens
 * their gate: rcpt and data_post, and queue, which then reads the message's stored copy, records
 * whether that worked and answers OK. queue also records what its
 * `accepted` promise resolves to. disconnect takes `disconnectMs`, or never
 * ends with `hold: [disconnect]`.
 */
const LIFECYCLE_PLUGIN = `
import { text } from "node:stream/consumers";
import { definePlugin, ok, z } from "@mailroom/core";

const state = globalThis[Symbol.for("mailroom.test.shutdownLifecycle")];

export default definePlugin({
  name: "lifecycle",
  options: z.object({ hold: z.array(z.string()).default([]), disconnectMs: z.number().default(0) }),
  setup({ options, registerRoute }) {
    registerRoute("held");
    const events = state.events;
    const held = (hook) =>
      options.hold.includes(hook) ? new Promise((resolve) => (state.gates[hook] = resolve)) : undefined;
    return {
      async rcpt() {
        if (options.hold.includes("rcpt")) {
          events.push("rcpt start");
          await held("rcpt");
          events.push("rcpt end");
        }
        return ok({ route: "held" });
      },
      async data_post() {
        events.push("data_post start");
        await held("data_post");
        events.push("data_post end");
      },
      async queue({ message, accepted }) {
        events.push("queue start");
        void accepted.then((yes) => events.push("accepted " + yes));
        await held("queue");
        try {
          const copy = await text(message.storedCopy());
          events.push("queue read " + copy.includes("Subject: held"));
        } catch (error) {
          events.push("queue read failed: " + error.code);
        }
        return ok();
      },
      async disconnect() {
        events.push("disconnect start");
        if (options.hold.includes("disconnect")) await new Promise(() => {});
        await new Promise((resolve) => setTimeout(resolve, options.disconnectMs));
        events.push("disconnect end");
      },
      close() {
        events.push("close");
      },
    };
  },
});
`;

interface LifecycleState {
  events: string[];
  gates: Record<string, () => void>;
}

function lifecycleState(): LifecycleState {
  return (globalThis as Record<symbol, LifecycleState>)[STATE]!;
}

/** Starts a logged server on the lifecycle plugin; every message goes through a spool file. */
async function startLifecycle(server: Record<string, unknown>, options: { hold?: string[]; disconnectMs?: number } = {}) {
  (globalThis as Record<symbol, LifecycleState>)[STATE] = { events: [], gates: {} };
  await writeFile(path.join(dir, "lifecycle.ts"), LIFECYCLE_PLUGIN);
  return startLogged({ memorySpool: { perMessage: 0 }, ...server }, [{ use: "./lifecycle.ts", with: options }]);
}

async function until(check: () => boolean, what: string): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > 5000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Sends EHLO, MAIL, RCPT and DATA, and the message up to its final dot. */
async function sendMessage(client: SmtpTestClient): Promise<void> {
  expect((await client.command("EHLO client.test")).code).toBe(250);
  expect((await client.command("MAIL FROM:<a@sender.test>")).code).toBe(250);
  expect((await client.command("RCPT TO:<b@local.test>")).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  client.write("Subject: held\r\n\r\nbody\r\n.\r\n");
}

test("shutdown closes the plugins only after the disconnect hooks ended", async () => {
  const { server } = await startLifecycle({ shutdownTimeout: "10s" }, { disconnectMs: 200 });
  const client = await server.connect();
  expect((await client.command("EHLO client.test")).code).toBe(250);

  await server.stop();

  expect((await client.read()).code).toBe(421);
  expect(lifecycleState().events).toEqual(["disconnect start", "disconnect end", "close"]);
});

test("shutdown closes the plugins only after a hook cut at the deadline ended", async () => {
  const { server, logs } = await startLifecycle({ shutdownTimeout: "200ms" }, { hold: ["rcpt"] });
  const { events, gates } = lifecycleState();
  const client = await server.connect();
  expect((await client.command("EHLO client.test")).code).toBe(250);
  expect((await client.command("MAIL FROM:<a@sender.test>")).code).toBe(250);
  client.write("RCPT TO:<b@local.test>\r\n");
  await until(() => events.includes("rcpt start"), "the rcpt hook");

  let stopped = false;
  const stopping = server.stop().then(() => (stopped = true));
  const goodbye = await client.read();
  expect(`${goodbye.code} ${goodbye.enhanced}`).toBe("421 4.3.2");
  await client.closed();
  await until(() => events.includes("disconnect end"), "the disconnect hook");
  await new Promise((resolve) => setTimeout(resolve, 100));
  expect(stopped).toBe(false);

  gates.rcpt!();
  await stopping;
  expect(events).toEqual(["rcpt start", "disconnect start", "disconnect end", "rcpt end", "close"]);
  const cut = logs.filter((line) => line.msg === "shutdownTimeout passed; closing the connection with its transaction unfinished");
  expect(cut).toHaveLength(1);
  expect(cut[0]!.inData).toBe(false);
});

test("shutdownTimeout during the queue hook rejects the message before the 421", async () => {
  const { server, logs } = await startLifecycle({ shutdownTimeout: "200ms" }, { hold: ["queue"] });
  const { events, gates } = lifecycleState();
  const client = await server.connect();
  await sendMessage(client);
  await until(() => events.includes("queue start"), "the queue hook");

  let stopped = false;
  const stopping = server.stop().then(() => (stopped = true));
  const goodbye = await client.read();
  expect(`${goodbye.code} ${goodbye.enhanced}`).toBe("421 4.3.2");
  // The plugin knew that the message was rejected before the client read the 421.
  expect(events).toEqual(["data_post start", "data_post end", "queue start", "accepted false"]);
  await client.closed();
  await new Promise((resolve) => setTimeout(resolve, 100));
  expect(stopped).toBe(false);

  gates.queue!();
  await stopping;
  // The spool file outlived the queue hook, and the plugin closed after it.
  expect(events).toEqual([
    "data_post start",
    "data_post end",
    "queue start",
    "accepted false",
    "disconnect start",
    "disconnect end",
    "queue read true",
    "close",
  ]);
  const cut = logs.filter((line) => line.msg === "shutdownTimeout passed; closing the connection with its transaction unfinished");
  expect(cut).toHaveLength(1);
  expect(cut[0]!.inData).toBe(true);
  expect(logs.some((line) => line.msg === "message rejected at the shutdown deadline after some routes stored it; their copies are removed")).toBe(true);
});

test("shutdownTimeout during data_post rejects the message without calling queue", async () => {
  const { server } = await startLifecycle({ shutdownTimeout: "200ms" }, { hold: ["data_post"] });
  const { events, gates } = lifecycleState();
  const client = await server.connect();
  await sendMessage(client);
  await until(() => events.includes("data_post start"), "the data_post hook");

  const stopping = server.stop();
  const goodbye = await client.read();
  expect(`${goodbye.code} ${goodbye.enhanced}`).toBe("421 4.3.2");
  await client.closed();
  await until(() => events.includes("disconnect end"), "the disconnect hook");

  gates.data_post!();
  await stopping;
  expect(events).toEqual(["data_post start", "disconnect start", "disconnect end", "data_post end", "close"]);
});

test("a message stored before shutdownTimeout gets its 250", async () => {
  const { server } = await startLifecycle({ shutdownTimeout: "10s" }, { hold: ["queue"] });
  const { events, gates } = lifecycleState();
  const client = await server.connect();
  await sendMessage(client);
  await until(() => events.includes("queue start"), "the queue hook");

  const stopping = server.stop();
  gates.queue!();
  expect((await client.read()).code).toBe(250);
  expect((await client.read()).code).toBe(421);
  await stopping;
  expect(events).toEqual([
    "data_post start",
    "data_post end",
    "queue start",
    "queue read true",
    "accepted true",
    "disconnect start",
    "disconnect end",
    "close",
  ]);
});

test("stuck hooks delay plugin close by 5 s", async () => {
  const { server, logs } = await startLifecycle({ shutdownTimeout: 0 }, { hold: ["disconnect"] });
  const { events } = lifecycleState();
  const client = await server.connect();
  expect((await client.command("EHLO client.test")).code).toBe(250);
  const started = Date.now();

  await server.stop();

  expect(Date.now() - started).toBeGreaterThanOrEqual(4900);
  expect(events).toEqual(["disconnect start", "close"]);
  const abandoned = logs.filter((line) => line.msg === "connection still running hooks when the server stopped; its plugins are closed anyway");
  expect(abandoned).toHaveLength(1);
  expect(abandoned[0]!.level).toBe(40);
  expect(abandoned[0]!.remote).toBe("127.0.0.1");
  expect(abandoned[0]!.clientConnected).toBe(false);
}, 15_000);
