import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { captureLogs, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";

// A plugin whose replies carry text outside US-ASCII.
const PLUGIN = `
import { definePlugin, deny, ok } from "@mailroom/core";

export default definePlugin({
  name: "unicode-replies",
  setup(context) {
    context.registerRoute("unicode");
    return {
      mail: () => ok({ message: "Absender in Ordnung \\u{1F600}" }),
      auth: () => deny({ message: "a".repeat(600) + "\\n" + "b" }),
      rcpt: ({ address }) => {
        if (address.local === "bob") return ok({ route: "unicode" });
        if (address.local === "long") return deny({ message: "x".repeat(600) + "\\n" + "y".repeat(600) });
        return deny({ message: "nö wäy\\nzweite Zeile: ß" });
      },
    };
  },
});
`;

let dir: string;
let server: TestServer;
let logs: Record<string, unknown>[];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-reply-text-"));
  await writeFile(path.join(dir, "unicode-replies.ts"), PLUGIN);
  const capture = captureLogs("info");
  logs = capture.records;
  server = await startTestServer(
    { server: { hostname: "mx.test", allowInsecureAuth: true }, plugins: [{ use: "./unicode-replies.ts" }] },
    { dir, logger: capture.logger },
  );
});

afterEach(async () => {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});

test("plugin reply text is sent as US-ASCII", async () => {
  const client = await server.connect();
  await client.command("EHLO client.test");

  const mail = await client.command("MAIL FROM:<a@sender.test>");
  expect(mail.raw).toBe("250 2.1.0 Absender in Ordnung ?");

  const rcpt = await client.command("RCPT TO:<alice@local.test>");
  expect(rcpt.raw).toBe("550-5.7.1 n? w?y\n550 5.7.1 zweite Zeile: ?");
  client.close();
});

test("long reply lines are cut to 512 octets", async () => {
  const client = await server.connect();
  await client.command("EHLO client.test");
  await client.command("MAIL FROM:<a@sender.test>");
  const reply = await client.command("RCPT TO:<long@local.test>");
  // 510 octets and CRLF per line: "550-5.7.1 " or "550 5.7.1 " leaves 500 for the text.
  const lines = reply.raw.split("\n");
  expect(lines).toEqual([`550-5.7.1 ${"x".repeat(500)}`, `550 5.7.1 ${"y".repeat(500)}`]);
  // The connection goes on after the cut lines.
  expect((await client.command("NOOP")).code).toBe(250);
  client.close();
});

test("AUTH failure text is one cut line", async () => {
  const client = await server.connect();
  await client.command("EHLO client.test");
  const reply = await client.command(`AUTH PLAIN ${Buffer.from("\0user\0secret").toString("base64")}`);
  // smtp-server writes this reply itself as one line, so the line break becomes a space.
  expect(reply.raw).toBe(`535 5.7.8 ${"a".repeat(500)}`);
  expect((await client.command("NOOP")).code).toBe(250);
  client.close();
});

test("non-ASCII reply text is logged as written", async () => {
  const client = await server.connect();
  await client.command("EHLO client.test");
  await client.command("MAIL FROM:<a@sender.test>");
  await client.command("RCPT TO:<alice@local.test>");
  client.close();

  const logged = logs.filter((line) => line.msg === "reply text contains characters outside US-ASCII; each is sent as ?");
  expect(logged.map((line) => line.hook)).toEqual(["mail", "rcpt"]);
  expect(logged[1]).toMatchObject({ plugin: "unicode-replies", message: "nö wäy\nzweite Zeile: ß", level: 40 });
  expect(typeof logged[1]!.conn).toBe("string");
});
