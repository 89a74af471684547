// A plugin whose close() never settles. Shutdown and reloads go on after
// `server.closeTimeout` and log the plugin, instead of waiting forever.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { MailroomServer } from "@mailroom/core";
import { captureLogs, SmtpTestClient } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";

/** Replies to MAIL with its generation. Its close() never settles, and with `failStart` its start() throws. */
const STUCK_PLUGIN = `
import { definePlugin, ok, z } from "@mailroom/core";

export default definePlugin({
  name: "stuck-close",
  options: z.object({ generation: z.number(), failStart: z.boolean().default(false) }),
  setup({ options }) {
    return {
      start() {
        if (options.failStart) throw new Error("start failed on purpose");
      },
      mail: () => ok({ message: "generation " + options.generation }),
      close: () => new Promise(() => {}),
    };
  },
});
`;

let dir: string;
let file: string;
let server: MailroomServer | undefined;

function config(generation: number, failStart = false): string {
  return `server:
  listen: ["127.0.0.1:0"]
  closeTimeout: 100ms
plugins:
  - use: ./stuck.ts
    with: { generation: ${generation}, failStart: ${failStart} }
`;
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "close-timeout-"));
  file = path.join(dir, "mailroom.yaml");
  await writeFile(path.join(dir, "stuck.ts"), STUCK_PLUGIN);
});

afterEach(async () => {
  await server?.close();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

test("shutdown goes on past a stuck close", async () => {
  await writeFile(file, config(1));
  const capture = captureLogs("info");
  server = await MailroomServer.fromFile(file, { logger: capture.logger });
  await server.listen();

  const started = Date.now();
  await server.close();
  expect(Date.now() - started).toBeLessThan(5000);
  const timedOut = capture.records.find((record) => record.msg === "plugin close() did not finish within server.closeTimeout; going on without it");
  expect(timedOut).toBeDefined();
  expect(timedOut!.plugin).toBe("stuck-close");
  expect(timedOut!.timeoutMs).toBe(100);
  expect(capture.records.some((record) => record.msg === "server stopped")).toBe(true);
});

test("rejected reload with a stuck close lets the next one run", async () => {
  await writeFile(file, config(1));
  server = await MailroomServer.fromFile(file, { logger: captureLogs("info").logger });
  const port = (await server.listen())[0]!.port;

  await writeFile(file, config(2, true));
  await expect(server.reload()).rejects.toThrow(/start failed on purpose/);
  await writeFile(file, config(3));
  await server.reload();

  const client = await SmtpTestClient.connect(port);
  await client.command("EHLO client.example");
  expect((await client.command("MAIL FROM:<a@sender.example>")).lines[0]).toBe("2.1.0 generation 3");
  client.close();
});
