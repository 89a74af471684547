import { afterEach, expect, test } from "vitest";
import { SmtpTestClient } from "@mailroom/testing";
import { startProtocolServer, status, type ProtocolServer } from "./protocol-kit.js";

let server: ProtocolServer | undefined;
const clients: SmtpTestClient[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server?.stop();
  server = undefined;
});

async function open(target: ProtocolServer, host = "127.0.0.1"): Promise<SmtpTestClient> {
  const client = await SmtpTestClient.connect(target.port, host);
  clients.push(client);
  return client;
}

test("connections past maxConnections get 421 and are closed", async () => {
  server = await startProtocolServer({ limits: { maxConnections: 2 } });
  const first = await open(server);
  await open(server);
  const third = await open(server);
  expect(status(first.greeting)).toBe("220");
  expect(status(third.greeting)).toBe("421 4.7.0");
  await third.closed();
  first.close();
  await first.closed();
  // The slot is free again once a connection ended.
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect((await open(server)).greeting.code).toBe(220);
});

test("connections past maxConnectionsPerIp get 421 and are closed", async () => {
  server = await startProtocolServer({ limits: { maxConnectionsPerIp: 1 } });
  const first = await open(server);
  const second = await open(server);
  expect(first.greeting.code).toBe(220);
  expect(status(second.greeting)).toBe("421 4.7.0");
  await second.closed();
  // Another address is counted on its own (127.0.0.2 is loopback too on Linux).
  const other = await open(server, "127.0.0.2").catch(() => undefined);
  if (other) expect(other.greeting.code).toBe(220);
});

test("an idle client gets 421 and is closed after idleTimeout", async () => {
  server = await startProtocolServer({ limits: { idleTimeout: 300 } });
  const client = await open(server);
  const reply = await client.read(5000);
  expect(status(reply)).toBe("421 4.4.2");
  await client.closed();
});

/** Opens a session with one accepted recipient and starts DATA. */
async function startData(target: ProtocolServer): Promise<SmtpTestClient> {
  const client = await target.ready();
  clients.push(client);
  expect((await client.command("MAIL FROM:<a@sender.example>")).code).toBe(250);
  expect((await client.command("RCPT TO:<bob@local.example>")).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  return client;
}

/** Writes `lines` message lines, one every `interval` ms. */
async function drip(client: SmtpTestClient, lines: number, interval: number): Promise<void> {
  client.write("Subject: slow\r\n\r\n");
  for (let i = 0; i < lines; i++) {
    await new Promise((resolve) => setTimeout(resolve, interval));
    client.write(`line ${i}\r\n`);
  }
}

test("a DATA transfer that stalls for dataTimeout gets 421 and is closed", async () => {
  server = await startProtocolServer({ limits: { dataTimeout: 400 } });
  const client = await startData(server);
  client.write("Subject: stalled\r\n\r\nfirst part\r\n");
  const started = Date.now();

  const reply = await client.read(5000);
  expect(status(reply)).toBe("421 4.4.2");
  expect(Date.now() - started).toBeGreaterThanOrEqual(350);
  await client.closed();
  expect(await server.stored()).toEqual([]);
});

test("a slow but steady DATA transfer outlasts dataTimeout", async () => {
  server = await startProtocolServer({ limits: { dataTimeout: 300 } });
  const client = await startData(server);
  const started = Date.now();

  // One line every 100 ms for about 1.5 s: five times dataTimeout in all.
  await drip(client, 15, 100);
  client.write(".\r\n");

  expect(status(await client.read())).toBe("250 2.0.0");
  expect(Date.now() - started).toBeGreaterThan(1200);
  const stored = await server.stored();
  expect(stored).toHaveLength(1);
  expect(stored[0]!.text).toContain("line 14\r\n");
});

test("idleTimeout does not cut a DATA transfer", async () => {
  server = await startProtocolServer({ limits: { idleTimeout: 300, dataTimeout: 2000 } });
  const client = await startData(server);
  client.write("Subject: pause\r\n\r\nbefore\r\n");
  await new Promise((resolve) => setTimeout(resolve, 800));
  client.write("after\r\n.\r\n");

  expect(status(await client.read())).toBe("250 2.0.0");
  expect(await server.stored()).toHaveLength(1);
  // Back in command mode, the idle timeout applies again.
  expect(status(await client.read(5000))).toBe("421 4.4.2");
});

test("a client dripping DATA keeps counting against maxConnectionsPerIp", async () => {
  server = await startProtocolServer({ limits: { maxConnectionsPerIp: 1, dataTimeout: 300 } });
  const client = await startData(server);
  const dripping = drip(client, 6, 100);

  const second = await open(server);
  expect(status(second.greeting)).toBe("421 4.7.0");
  await second.closed();

  await dripping;
  client.write(".\r\n");
  expect(status(await client.read())).toBe("250 2.0.0");
});

test("after maxErrors protocol errors the server replies 421 and closes", async () => {
  server = await startProtocolServer({ limits: { maxErrors: 3 } });
  const client = await server.ready();
  clients.push(client);
  expect(status(await client.command("BOGUS"))).toBe("500 5.5.1");
  expect(status(await client.command("RCPT TO:<bob@local.example>"))).toBe("503 5.5.1");
  expect(status(await client.command("BOGUS"))).toBe("500 5.5.1");
  expect(status(await client.read())).toBe("421 4.7.0");
  await client.closed();
});

test("an AUTH line may be longer than other commands, up to maxAuthLineLength", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  clients.push(client);
  // Without an auth plugin AUTH is unavailable, but the line is read whole.
  expect(status(await client.command(`AUTH PLAIN ${"A".repeat(8000)}`))).toBe("502 5.5.1");
  expect(status(await client.command(`AUTH PLAIN ${"A".repeat(13000)}`))).toBe("500 5.5.2");
  expect(status(await client.command(`NOOP ${"A".repeat(8000)}`))).toBe("500 5.5.2");
  expect(status(await client.command("NOOP"))).toBe("250 2.0.0");
});

test("a client that disconnects mid-DATA leaves no spool file and no stored message", async () => {
  const { mkdtemp, readdir, rm } = await import("node:fs/promises");
  const os = await import("node:os");
  const path = await import("node:path");
  const spoolDir = await mkdtemp(path.join(os.tmpdir(), "mailroom-spool-test-"));
  try {
    // Every message goes to a spool file, so the test shows that the file goes too.
    server = await startProtocolServer({ spoolDir, memorySpool: { perMessage: 0 } });
    const client = await server.ready();
    await client.command("MAIL FROM:<a@sender.example>");
    await client.command("RCPT TO:<bob@local.example>");
    expect((await client.command("DATA")).code).toBe(354);
    client.write("Subject: cut\r\n\r\nhalf a mess");
    await new Promise((resolve) => setTimeout(resolve, 100));
    client.close();
    let left = ["pending"];
    for (let i = 0; i < 50 && left.length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      left = await readdir(spoolDir);
    }
    expect(left).toEqual([]);
    expect(await server.stored()).toEqual([]);
    const next = await server.ready();
    expect(status(await next.command("NOOP"))).toBe("250 2.0.0");
    next.close();
  } finally {
    await rm(spoolDir, { recursive: true, force: true });
  }
});

test("a client that disconnects while the data hook runs leaves no spool file", async () => {
  const { mkdtemp, readdir, rm } = await import("node:fs/promises");
  const os = await import("node:os");
  const path = await import("node:path");
  const spoolDir = await mkdtemp(path.join(os.tmpdir(), "mailroom-spool-test-"));
  try {
    server = await startProtocolServer({ spoolDir, memorySpool: { perMessage: 0 } }, { dataDelay: 200 });
    const client = await server.ready();
    await client.command("MAIL FROM:<a@sender.example>");
    await client.command("RCPT TO:<bob@local.example>");
    client.write("DATA\r\n");
    await new Promise((resolve) => setTimeout(resolve, 50));
    client.close();
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await readdir(spoolDir)).toEqual([]);
    const next = await server.ready();
    expect(status(await next.command("NOOP"))).toBe("250 2.0.0");
    next.close();
  } finally {
    await rm(spoolDir, { recursive: true, force: true });
  }
});
