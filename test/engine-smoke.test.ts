import { writeFile } from "node:fs/promises";
import path from "node:path";
import { startTestServer } from "@mailroom/testing";
import { afterEach, expect, test } from "vitest";

const PLUGIN = `
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { definePlugin, ok } from "@mailroom/core";

export default definePlugin({
  name: "sink",
  setup(context) {
    context.registerRoute("sink");
    return {
      rcpt: () => ok({ route: "sink" }),
      async queue({ message }) {
        await pipeline(message.storedCopy(), createWriteStream(context.configDir + "/out.eml"));
        return ok();
      },
    };
  },
});
`;

let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
  stop = undefined;
});

test("engine delivers one message to a route owner", async () => {
  const { mkdtemp, readFile } = await import("node:fs/promises");
  const os = await import("node:os");
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-smoke-"));
  await writeFile(path.join(dir, "sink.ts"), PLUGIN);
  const server = await startTestServer({ server: { hostname: "mx.test" }, plugins: [{ use: "./sink.ts" }] }, { dir });
  stop = server.stop;

  const client = await server.connect();
  expect(client.greeting.code).toBe(220);
  const replies = await client.send({ from: "a@sender.example", to: ["b@local.example"], message: "Subject: hi\r\n\r\nbody\r\n" });
  expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250, 250]);
  const stored = await readFile(path.join(dir, "out.eml"), "utf8");
  expect(stored).toMatch(/^Return-Path: <a@sender.example>\r\nReceived: from client.example/);
  expect(stored.endsWith("Subject: hi\r\n\r\nbody\r\n")).toBe(true);
  client.close();
});
