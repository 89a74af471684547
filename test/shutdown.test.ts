import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { captureLogs, SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
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

/** Starts a server on the sink plugin whose JSON log lines land in the returned list. */
async function startLogged(server: Record<string, unknown>, plugins: unknown[] = [{ use: SINK_PLUGIN }]) {
  const capture = captureLogs("info");
  const started = await startTestServer({ server, plugins }, { dir, logger: capture.logger });
  return { server: started, logs: capture.records };
}

/** Opens a session and runs EHLO, MAIL and one RCPT. */
async function openTransaction(server: TestServer): Promise<SmtpTestClient> {
  const client = await server.connect();
  expect((await client.command("EHLO client.test")).code).toBe(250);
  expect((await client.command("MAIL FROM:<a@sender.test>")).code).toBe(250);
  expect((await client.command("RCPT TO:<b@local.test>")).code).toBe(250);
  return client;
}

test("shutdown lets a transaction between MAIL and DATA finish", async () => {
  const server = await startTestServer(
    { server: { shutdownTimeout: "10s" }, plugins: [{ use: SINK_PLUGIN, with: { out: "out.eml" } }] },
    { dir },
  );
  const client = await openTransaction(server);

  const stopped = server.stop();

  const second = await client.command("RCPT TO:<c@local.test>");
  expect(second.code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  client.write("Subject: after SIGTERM\r\n\r\nbody\r\n.\r\n");
  const accepted = await client.read();
  expect(accepted.code).toBe(250);
  const goodbye = await client.read();
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;

  const stored = await readFile(path.join(dir, "out.eml"), "utf8");
  expect(stored).toContain("Subject: after SIGTERM");
});

test("shutdown closes a session after RSET ends its transaction", async () => {
  const server = await startTestServer({ server: { shutdownTimeout: "10s" }, plugins: [{ use: SINK_PLUGIN }] }, { dir });
  const client = await openTransaction(server);

  const stopped = server.stop();

  expect((await client.command("NOOP")).code).toBe(250);
  // A MAIL inside the open transaction is the usual protocol error, not the end of the session.
  const nested = await client.command("MAIL FROM:<c@sender.test>");
  expect(nested.code).toBe(503);
  expect(nested.enhanced).toBe("5.5.1");
  expect((await client.command("RSET")).code).toBe(250);
  const goodbye = await client.read();
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;
});

test("shutdown gives MAIL pipelined behind a command 421", async () => {
  const slow = path.join(dir, "slow-ehlo.ts");
  await writeFile(
    slow,
    'import { definePlugin } from "@mailroom/core";\n' +
      "export default definePlugin({ name: \"slow-ehlo\", setup: () => ({ ehlo: () => new Promise((resolve) => setTimeout(resolve, 300)) }) });\n",
  );
  const server = await startTestServer(
    { server: { shutdownTimeout: "10s" }, plugins: [{ use: slow }, { use: SINK_PLUGIN }] },
    { dir },
  );
  const client = await server.connect();
  client.write("EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n");
  await new Promise((resolve) => setTimeout(resolve, 100));

  const stopped = server.stop();

  expect((await client.read()).code).toBe(250);
  const goodbye = await client.read();
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;
});

test("shutdownTimeout cuts a stalled transaction and logs it", async () => {
  const { server, logs } = await startLogged({ shutdownTimeout: "300ms" });
  const client = await openTransaction(server);
  const started = Date.now();

  const stopped = server.stop();

  const goodbye = await client.read(5000);
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  await client.closed();
  await stopped;

  const cut = logs.filter((line) => line.msg === "shutdownTimeout passed; closing the connection with its transaction unfinished");
  expect(cut).toHaveLength(1);
  expect(cut[0]!.level).toBe(40);
  expect(cut[0]!.remote).toBe("127.0.0.1");
  expect(typeof cut[0]!.conn).toBe("string");
  expect(cut[0]!.txn).toBe(`${cut[0]!.conn}.1`);
  expect(cut[0]!.recipients).toBe(1);
  expect(cut[0]!.inData).toBe(false);
});

test("shutdownTimeout cuts a DATA transfer and logs it", async () => {
  const { server, logs } = await startLogged({ shutdownTimeout: "300ms" });
  const client = await openTransaction(server);
  expect((await client.command("DATA")).code).toBe(354);
  client.write("Subject: slow\r\n\r\nfirst half ");

  const stopped = server.stop();

  const goodbye = await client.read(5000);
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;

  const cut = logs.find((line) => line.msg === "shutdownTimeout passed; closing the connection with its transaction unfinished");
  expect(cut?.inData).toBe(true);
});

test("shutdownTimeout 0 closes a transaction at once", async () => {
  const server = await startTestServer({ server: { shutdownTimeout: 0 }, plugins: [{ use: SINK_PLUGIN }] }, { dir });
  const client = await openTransaction(server);
  const started = Date.now();

  const stopped = server.stop();

  const goodbye = await client.read(5000);
  expect(goodbye.code).toBe(421);
  expect(goodbye.enhanced).toBe("4.3.2");
  await client.closed();
  await stopped;
  expect(Date.now() - started).toBeLessThan(2000);
});
