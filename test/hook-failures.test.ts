import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { startTestServer, type TestServer } from "@mailroom/testing";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

// Misbehaves at the hook named by the sender's or recipient's local part.
const PLUGIN = `
import { definePlugin, ok } from "@mailroom/core";

const misbehave = (what) => {
  if (what === "throw") throw new Error("plugin exploded");
  if (what === "hang") return new Promise(() => {});
  if (what === "reject") return Promise.reject(new Error("plugin rejected"));
  if (what === "junk") return 42;
  return undefined;
};

export default definePlugin({
  name: "faulty",
  setup(context) {
    context.registerRoute("sink");
    return {
      mail: ({ address }) => misbehave(address?.local),
      rcpt: ({ address }) => misbehave(address.local) ?? ok({ route: "sink" }),
      data_post: ({ transaction }) => misbehave(transaction.sender?.local === "post" ? "throw" : undefined),
      queue: () => ok(),
      reset: () => { throw new Error("reset exploded"); },
      disconnect: () => { throw new Error("disconnect exploded"); },
    };
  },
});
`;

let dir: string;
let server: TestServer;
let logs: Record<string, unknown>[];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-faults-"));
  await writeFile(path.join(dir, "faulty.ts"), PLUGIN);
  logs = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split("\n").filter(Boolean)) logs.push(JSON.parse(line));
      callback();
    },
  });
  server = await startTestServer(
    { server: { hostname: "mx.test", hookTimeout: "300ms" }, plugins: [{ use: "./faulty.ts" }] },
    { dir, logger: pino({ level: "debug" }, sink) },
  );
});

afterEach(async () => {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("failing plugin handlers", () => {
  test.each(["throw", "hang", "reject", "junk"])("%s at mail gives 451 4.3.0", async (fault) => {
    const client = await server.connect();
    await client.command("EHLO client.test");
    const reply = await client.command(`MAIL FROM:<${fault}@sender.test>`);
    expect(reply.code).toBe(451);
    expect(reply.enhanced).toBe("4.3.0");
    expect((await client.command("NOOP")).code).toBe(250);
    expect((await client.command("MAIL FROM:<fine@sender.test>")).code).toBe(250);
    client.close();
  });

  test("failure log names plugin, hook and connection", async () => {
    const client = await server.connect();
    await client.command("EHLO client.test");
    await client.command("MAIL FROM:<fine@sender.test>");
    await client.command("RCPT TO:<throw@local.test>");
    client.close();
    const entry = logs.find((line) => line.msg === "hook failed" && line.hook === "rcpt");
    expect(entry).toMatchObject({ plugin: "faulty", hook: "rcpt" });
    expect(typeof entry?.conn).toBe("string");
  });

  test("failure at data_post gives 451 and stores nothing", async () => {
    const client = await server.connect();
    await client.command("EHLO client.test");
    await client.command("MAIL FROM:<post@sender.test>");
    await client.command("RCPT TO:<fine@local.test>");
    const reply = await client.data("Subject: x\r\n\r\nbody\r\n");
    expect(reply.code).toBe(451);
    expect(reply.enhanced).toBe("4.3.0");
    expect((await client.command("NOOP")).code).toBe(250);
    client.close();
  });

  test("failures at reset and disconnect are only logged", async () => {
    const client = await server.connect();
    await client.command("EHLO client.test");
    await client.command("MAIL FROM:<fine@sender.test>");
    expect((await client.command("RSET")).code).toBe(250);
    await client.command("QUIT");
    await client.closed();
    await expect.poll(() => logs.some((line) => line.msg === "hook failed" && line.hook === "disconnect")).toBe(true);
    const next = await server.connect();
    expect(next.greeting.code).toBe(220);
    next.close();
  });
});

test("throw at connect gives 421 4.3.0 and closes", async () => {
  await writeFile(
    path.join(dir, "refuse.ts"),
    'import { definePlugin } from "@mailroom/core";\n' +
      'export default definePlugin({ name: "refuse", setup: () => ({ connect: () => { throw new Error("no"); } }) });\n',
  );
  const refusing = await startTestServer({ plugins: [{ use: "./refuse.ts" }] }, { dir });
  const client = await refusing.connect();
  expect(client.greeting.code).toBe(421);
  expect(client.greeting.enhanced).toBe("4.3.0");
  await client.closed();
  await refusing.stop();
});

describe("socket faults", () => {
  test("reset mid-DATA leaves the server serving", async () => {
    const client = await server.connect();
    await client.command("EHLO client.test");
    await client.command("MAIL FROM:<fine@sender.test>");
    await client.command("RCPT TO:<fine@local.test>");
    await client.command("DATA");
    client.write("Subject: cut\r\n\r\nhalf a mes");
    client.close();

    const raw = net.connect(server.port, "127.0.0.1");
    raw.on("error", () => {});
    raw.write("EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    raw.destroy();

    const next = await server.connect();
    const replies = await next.send({ from: "fine@sender.test", to: ["fine@local.test"], message: "Subject: ok\r\n\r\nbody\r\n" });
    expect(replies.at(-1)?.code).toBe(250);
    next.close();
  });
});

test("ok without a stored route gives 451 at RCPT", async () => {
  await writeFile(
    path.join(dir, "allow.ts"),
    'import { definePlugin, ok } from "@mailroom/core";\n' +
      'export default definePlugin({ name: "allow", setup: () => ({ rcpt: () => ok() }) });\n',
  );
  const allowing = await startTestServer({ plugins: [{ use: "./allow.ts" }] }, { dir });
  const client = await allowing.connect();
  await client.command("EHLO client.test");
  await client.command("MAIL FROM:<a@sender.test>");
  const reply = await client.command("RCPT TO:<b@local.test>");
  expect(reply.code).toBe(451);
  expect(reply.enhanced).toBe("4.3.0");
  expect((await client.command("DATA")).code).toBe(554);
  client.close();
  await allowing.stop();
});
