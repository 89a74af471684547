import { afterEach, expect, test } from "vitest";
import { startProtocolServer, status, type ProtocolServer } from "./protocol-kit.js";

let server: ProtocolServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

test("1 MiB unterminated line closes the connection", async () => {
  server = await startProtocolServer();
  const bystander = await server.ready();
  const client = await server.ready();
  const before = process.memoryUsage().arrayBuffers;
  const chunk = "A".repeat(64 * 1024);
  for (let i = 0; i < 16 && !client.isClosed; i++) {
    client.write(chunk);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const reply = await client.read();
  expect(["500 5.5.2", "421 4.7.0"]).toContain(status(reply));
  await client.closed();
  // The server discarded the bytes instead of keeping them.
  expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * 1024 * 1024);
  expect(status(await bystander.command("NOOP"))).toBe("250 2.0.0");
  const fresh = await server.ready();
  expect(status(await fresh.command("NOOP"))).toBe("250 2.0.0");
  bystander.close();
  fresh.close();
});

test("a command over the length limit gets 500 and the connection stays usable", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  expect(status(await client.command(`NOOP ${"A".repeat(5000)}`))).toBe("500 5.5.2");
  expect(status(await client.command("NOOP"))).toBe("250 2.0.0");
  client.close();
});

test("512-octet command accepted, 513 refused", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  expect(status(await client.command(`NOOP ${"a".repeat(512 - 7)}`))).toBe("250 2.0.0");
  expect(status(await client.command(`NOOP ${"a".repeat(512 - 6)}`))).toBe("500 5.5.2");
  client.close();
});

test("a 1,500-octet message line is stored byte-exact", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  await client.command("RCPT TO:<bob@local.example>");
  const long = "B".repeat(1500);
  const body = `Subject: long\r\n\r\n${long}\r\nend\r\n`;
  expect(status(await client.data(body))).toBe("250 2.0.0");
  const [stored] = await server.stored();
  expect(stored!.text.endsWith(body)).toBe(true);
  client.close();
});

test("long DATA line refused after the dot", async () => {
  server = await startProtocolServer({ limits: { maxDataLineLength: 1000 } });
  const client = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  await client.command("RCPT TO:<bob@local.example>");
  expect((await client.command("DATA")).code).toBe(354);
  client.write(`Subject: long\r\n\r\n${"C".repeat(1001)}\r\nend\r\n`);
  expect(await client.silentFor(300)).toBe(true);
  client.write(".\r\n");
  expect(status(await client.read())).toBe("500 5.5.2");
  expect(await server.stored()).toEqual([]);
  expect(status(await client.command("NOOP"))).toBe("250 2.0.0");
  client.close();
});

test("huge folded header stalls no one", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  const other = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  await client.command("RCPT TO:<bob@local.example>");
  const body = `Subject: s${"\r\n x".repeat(200_000)}\r\n\r\nbody\r\n`;
  expect((await client.command("DATA")).code).toBe(354);
  client.write(`${body}.\r\n`);
  const reply = client.read();
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(status(await other.command("NOOP"))).toBe("250 2.0.0");
  expect(status(await reply)).toBe("250 2.0.0");
  const [stored] = await server.stored();
  expect(stored!.text.endsWith(body)).toBe(true);
  client.close();
  other.close();
});
