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
      rcpt: ({ address }) =>
        address.local === "bob" ? ok({ route: "unicode" }) : deny({ message: "nö wäy\\nzweite Zeile: ß" }),
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
    { server: { hostname: "mx.test" }, plugins: [{ use: "./unicode-replies.ts" }] },
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
