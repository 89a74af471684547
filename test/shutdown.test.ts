import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { SmtpTestClient, startTestServer } from "@mailroom/testing";
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
