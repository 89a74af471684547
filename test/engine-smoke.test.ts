import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startTestServer } from "@mailroom/testing";
import { expect, test } from "vitest";
import { SINK_PLUGIN } from "./fixtures/paths.js";

test("engine delivers one message to a route owner", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-smoke-"));
  const server = await startTestServer(
    { server: { hostname: "mx.test" }, plugins: [{ use: SINK_PLUGIN, with: { out: "out.eml" } }] },
    { dir },
  );

  const client = await server.connect();
  expect(client.greeting.code).toBe(220);
  const replies = await client.send({ from: "a@sender.example", to: ["b@local.example"], message: "Subject: hi\r\n\r\nbody\r\n" });
  expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250, 250]);
  const stored = await readFile(path.join(dir, "out.eml"), "utf8");
  expect(stored).toMatch(/^Return-Path: <a@sender.example>\r\nReceived: from client.example/);
  expect(stored.endsWith("Subject: hi\r\n\r\nbody\r\n")).toBe(true);
  client.close();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});
