// Plugins that throw, reject, never settle or block the event loop, at the
// hooks that test/hook-failures.test.ts leaves out, with other clients
// talking to the same server meanwhile.
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { report, scale } from "./fault-kit.js";

const HOOK_TIMEOUT = 300;

// The fault is named by the HELO name (ehlo), the recipient's local part
// (rcpt), or a "Fault:" header (data_post, queue).
const PLUGIN = `
import { mkdir, writeFile } from "node:fs/promises";
import { buffer } from "node:stream/consumers";
import { definePlugin, ok } from "@mailroom/core";

const spin = (ms) => { const end = Date.now() + ms; while (Date.now() < end) {} };
const misbehave = (what) => {
  if (what === "throw") throw new Error("plugin exploded");
  if (what === "reject") return Promise.reject(new Error("plugin rejected"));
  if (what === "hang") return new Promise(() => {});
  if (what === "spin-hang") { spin(200); return new Promise(() => {}); }
  if (what === "spin-throw") { spin(200); throw new Error("plugin exploded after spinning"); }
  if (what === "spin-late") { spin(${HOOK_TIMEOUT} + 200); return ok(); }
  if (what === "spin") { spin(200); return undefined; }
  return undefined;
};
const fault = async (message) => /^Fault: (.*)$/m.exec((await buffer(message.stream())).toString())?.[1];

export default definePlugin({
  name: "faulty",
  setup(context) {
    context.registerRoute("box");
    return {
      connect: ({ connection }) => misbehave(connection.localPort === Number(process.env.FAULTY_CONNECT_PORT) ? "hang" : undefined),
      ehlo: ({ name }) => misbehave(name),
      rcpt: ({ address }) => misbehave(address.local) ?? ok({ route: "box" }),
      data_post: async ({ message }) => {
        const what = await fault(message);
        return what?.startsWith("post-") ? misbehave(what.slice(5)) : undefined;
      },
      async queue({ message }) {
        const what = await fault(message);
        if (what?.startsWith("queue-")) return misbehave(what.slice(6));
        await mkdir(context.configDir + "/box", { recursive: true });
        await writeFile(context.configDir + "/box/" + Date.now() + Math.random() + ".eml", await buffer(message.storedCopy()));
        return ok();
      },
    };
  },
});
`;

let dir: string;
let server: TestServer;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-plugin-faults-"));
  await writeFile(path.join(dir, "faulty.ts"), PLUGIN);
  server = await startTestServer(
    {
      server: {
        hostname: "mx.faults.test",
        hookTimeout: `${HOOK_TIMEOUT}ms`,
        limits: { maxConnections: 300, maxConnectionsPerIp: 300 },
      },
      plugins: [{ use: "./faulty.ts" }],
    },
    { dir },
  );
});

afterAll(async () => {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Counts the stored messages that carry a "Fault:" header. */
async function storedFaulty(): Promise<number> {
  const names = await readdir(path.join(dir, "box")).catch(() => [] as string[]);
  const texts = await Promise.all(names.map((name) => readFile(path.join(dir, "box", name), "utf8")));
  return texts.filter((text) => /^Fault:/m.test(text)).length;
}

/** Reads the next reply, failing when it takes ten times the hook deadline. */
const reply = (client: SmtpTestClient) => client.read(HOOK_TIMEOUT * 10);

/** Runs a full transaction on another connection; returns the final reply code. */
async function bystander(): Promise<number> {
  const client = await server.connect();
  const replies = await client.send({ from: "a@client.test", to: ["fine@local.test"], message: "Subject: ok\r\n\r\nfine\r\n" });
  expect((await client.command("NOOP")).code).toBe(250);
  client.close();
  return replies.at(-1)!.code;
}

const FAULTS = ["throw", "reject", "hang", "spin-hang", "spin-throw", "spin-late"];

/**
 * Checks a bystander's final code. A handler that blocks the loop past the
 * deadline ("spin-late") makes hooks waiting meanwhile miss theirs too, so
 * there a 451 is allowed, and a later transaction must get 250.
 */
async function expectBystander(fault: string, code: number): Promise<void> {
  if (fault === "spin-late") {
    expect([250, 451]).toContain(code);
    expect(await bystander()).toBe(250);
  } else {
    expect(code).toBe(250);
  }
}

describe.each(FAULTS)("a plugin that does '%s'", (fault) => {
  // RFC 2034 leaves enhanced codes out of every reply to HELO and EHLO.
  test("at ehlo gets 451, session goes on", async () => {
    const client = await server.connect();
    client.write(`EHLO ${fault}\r\n`);
    const [answer, other] = await Promise.all([reply(client), bystander()]);
    expect([answer.code, answer.enhanced]).toEqual([451, undefined]);
    await expectBystander(fault, other);
    expect((await client.command("EHLO fine.client.test")).code).toBe(250);
    client.close();
  });

  test("at rcpt gets 451 4.3.0, bystander delivers", async () => {
    const client = await server.connect();
    await client.command("EHLO client.test");
    await client.command("MAIL FROM:<a@client.test>");
    client.write(`RCPT TO:<${fault}@local.test>\r\n`);
    const [answer, other] = await Promise.all([reply(client), bystander()]);
    expect([answer.code, answer.enhanced]).toEqual([451, "4.3.0"]);
    await expectBystander(fault, other);
    expect((await client.command("RCPT TO:<fine@local.test>")).code).toBe(250);
    expect((await client.data("Subject: after\r\n\r\nok\r\n")).code).toBe(250);
    client.close();
  });

  test.each(["post", "queue"])("at %s gets 451 4.3.0, stores nothing", async (hook) => {
    const client = await server.connect();
    await client.command("EHLO client.test");
    await client.command("MAIL FROM:<a@client.test>");
    await client.command("RCPT TO:<fine@local.test>");
    expect((await client.command("DATA")).code).toBe(354);
    client.write(`Fault: ${hook}-${fault}\r\nSubject: x\r\n\r\nbody\r\n.\r\n`);
    const [answer, other] = await Promise.all([reply(client), bystander()]);
    expect([answer.code, answer.enhanced]).toEqual([451, "4.3.0"]);
    await expectBystander(fault, other);
    expect(await storedFaulty()).toBe(0);
    expect((await client.command("NOOP")).code).toBe(250);
    client.close();
  });
});

test("blocking handler answering in time is obeyed", async () => {
  const client = await server.connect();
  await client.command("EHLO client.test");
  await client.command("MAIL FROM:<a@client.test>");
  expect((await client.command("RCPT TO:<spin@local.test>")).code).toBe(250);
  client.close();
});

test("hung connect handler gets 421 4.3.0", async () => {
  process.env.FAULTY_CONNECT_PORT = String(server.port);
  try {
    const client = await server.connect();
    expect([client.greeting.code, client.greeting.enhanced]).toEqual([421, "4.3.0"]);
    await client.closed();
  } finally {
    delete process.env.FAULTY_CONNECT_PORT;
  }
  expect(await bystander()).toBe(250);
});

test("many hung hooks leave the server serving", async () => {
  const count = scale(20, 200);
  const clients = await Promise.all(Array.from({ length: count }, () => server.connect()));
  const answers = await Promise.all(
    clients.map(async (client, index) => {
      await client.command("EHLO client.test");
      await client.command("MAIL FROM:<a@client.test>");
      const answer = await client.command(`RCPT TO:<${index % 2 ? "hang" : "reject"}@local.test>`, HOOK_TIMEOUT * 20);
      client.close();
      return answer.code;
    }),
  );
  expect(answers.every((code) => code === 451)).toBe(true);
  expect(await bystander()).toBe(250);
  report("plugins that throw, reject, never settle or block the loop", {
    load: `${count} clients at once on hung or rejecting rcpt handlers, plus one bystander per case`,
    faults: `${FAULTS.join(", ")} at ehlo, rcpt, data_post and queue; a connect handler that never settles`,
    inputs: `${FAULTS.length * 4} faulty handler calls answered 451 (with 4.3.0 except at EHLO); a hung connect handler answered 421 4.3.0; a handler that blocked 200 ms and answered in time was obeyed`,
    lost: 0,
  });
});
