// A plugin whose start() never settles. The start and a reload fail after
// `server.setupTimeout` with an error naming the plugin, and `mailroom
// start` exits 1 with that error instead of ending silently.
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { MailroomServer } from "@mailroom/core";
import { captureLogs, SmtpTestClient } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";
import { BIN } from "./fault-kit.js";

/** Replies to MAIL with its generation. With `hang`, its start() never settles and keeps no handle open. */
const HANGING_PLUGIN = `
import { definePlugin, ok, z } from "@mailroom/core";

export default definePlugin({
  name: "hanging-start",
  options: z.object({ generation: z.number(), hang: z.boolean() }),
  setup({ options }) {
    return {
      start: () => (options.hang ? new Promise(() => {}) : undefined),
      mail: () => ok({ message: "generation " + options.generation }),
    };
  },
});
`;

let dir: string;
let file: string;
let server: MailroomServer | undefined;

function config(generation: number, hang: boolean): string {
  return `server:
  listen: ["127.0.0.1:0"]
  setupTimeout: 300ms
plugins:
  - use: ./hanging.ts
    with: { generation: ${generation}, hang: ${hang} }
`;
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "start-timeout-"));
  file = path.join(dir, "mailroom.yaml");
  await writeFile(path.join(dir, "hanging.ts"), HANGING_PLUGIN);
});

afterEach(async () => {
  await server?.close();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

test("start command fails on a hanging start", async () => {
  await writeFile(file, config(1, true));
  const result = spawnSync(process.execPath, [BIN, "start", "--config", file], { cwd: dir, encoding: "utf8", timeout: 15_000 });
  expect(result.status).toBe(1);
  expect(result.stderr).toContain("plugin hanging-start: start() did not finish within 300 ms (server.setupTimeout)");
});

test("reload with a hanging start keeps the old set", async () => {
  await writeFile(file, config(1, false));
  server = await MailroomServer.fromFile(file, { logger: captureLogs("info").logger });
  const port = (await server.listen())[0]!.port;

  await writeFile(file, config(2, true));
  await expect(server.reload()).rejects.toThrow("plugin hanging-start: start() did not finish within 300 ms");

  const client = await SmtpTestClient.connect(port);
  await client.command("EHLO client.example");
  expect((await client.command("MAIL FROM:<a@sender.example>")).lines[0]).toBe("2.1.0 generation 1");
  client.close();
});
