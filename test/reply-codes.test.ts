import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { captureLogs, startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";

// A plugin whose answers carry codes that do not fit their verdicts.
const PLUGIN = `
import { definePlugin, deny, denySoft, ok } from "@mailroom/core";

export default definePlugin({
  name: "odd-codes",
  setup(context) {
    context.registerRoute("odd");
    return {
      mail: () => ok({ code: 250, enhanced: "2.1.0" }),
      rcpt: ({ address }) => {
        if (address.local === "soft") return deny({ code: 450, message: "Try later" });
        if (address.local === "short") return deny({ code: 550, enhanced: "5.1" });
        if (address.local === "class") return denySoft({ code: 451, enhanced: "5.7.1" });
        if (address.local === "fine") return deny({ code: 553, enhanced: "5.1.3", message: "Bad address" });
        return ok({ route: "odd" });
      },
    };
  },
});
`;

const WARNING = "plugin answer code replaced in the reply";

let dir: string;
let server: TestServer;
let logs: Record<string, unknown>[];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-reply-codes-"));
  await writeFile(path.join(dir, "odd-codes.ts"), PLUGIN);
  const capture = captureLogs("debug");
  logs = capture.records;
  server = await startTestServer({ server: { hostname: "mx.test" }, plugins: [{ use: "./odd-codes.ts" }] }, { dir, logger: capture.logger });
});

afterEach(async () => {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Sends RCPT for each local part in one transaction and returns the replies as "code enhanced text". */
async function rcptReplies(locals: string[]): Promise<string[]> {
  const client = await server.connect();
  await client.command("EHLO client.test");
  await client.command("MAIL FROM:<a@sender.test>");
  const replies: string[] = [];
  for (const local of locals) replies.push((await client.command(`RCPT TO:<${local}@local.test>`)).raw);
  client.close();
  return replies;
}

test("ill-fitting answer codes fall back to defaults", async () => {
  const replies = await rcptReplies(["soft", "short", "class", "fine"]);
  expect(replies[0]).toBe("550 5.7.1 Try later");
  expect(replies[1]).toBe("550 5.7.1 Recipient rejected");
  expect(replies[2]).toBe("451 4.7.1 Recipient temporarily rejected, try again later");
  expect(replies[3]).toBe("553 5.1.3 Bad address");
});

test("replaced answer codes are logged", async () => {
  await rcptReplies(["soft", "short", "class", "fine"]);
  const logged = logs.filter((line) => line.msg === WARNING);
  expect(logged).toHaveLength(3);
  expect(logged.map((line) => line.level)).toEqual([40, 40, 40]);
  expect(logged[0]).toMatchObject({ plugin: "odd-codes", hook: "rcpt", verdict: "DENY", givenCode: 450, usedCode: 550, usedEnhanced: "5.7.1" });
  expect(logged[1]).toMatchObject({ plugin: "odd-codes", hook: "rcpt", givenCode: 550, givenEnhanced: "5.1", usedCode: 550, usedEnhanced: "5.7.1" });
  expect(logged[2]).toMatchObject({ plugin: "odd-codes", hook: "rcpt", verdict: "DENYSOFT", givenEnhanced: "5.7.1", usedCode: 451, usedEnhanced: "4.7.1" });
  expect(typeof logged[0]!.conn).toBe("string");
});

test("a repeated replacement is logged at debug", async () => {
  await rcptReplies(["soft", "soft", "soft"]);
  await rcptReplies(["soft"]);
  const logged = logs.filter((line) => line.msg === WARNING);
  expect(logged.map((line) => line.level)).toEqual([40, 20, 20, 20]);
});
