import { afterEach, expect, test } from "vitest";
import { startProtocolServer, status, type ProtocolServer } from "./protocol-kit.js";

let server: ProtocolServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

test("EHLO advertises the configured size limit", async () => {
  server = await startProtocolServer({ limits: { maxMessageSize: 2000 } });
  const client = await server.connect();
  const reply = await client.command("EHLO client.example");
  expect(reply.lines).toContain("SIZE 2000");
  client.close();
});

test("a declared size over the limit is refused at MAIL", async () => {
  server = await startProtocolServer({ limits: { maxMessageSize: 2000 } });
  const client = await server.ready();
  expect(status(await client.command("MAIL FROM:<a@sender.example> SIZE=999999"))).toBe("552 5.3.4");
  client.close();
});

test("a message larger than the limit is refused after the final dot, whatever SIZE said", async () => {
  server = await startProtocolServer({ limits: { maxMessageSize: 2000 } });
  const client = await server.ready();
  expect((await client.command("MAIL FROM:<a@sender.example> SIZE=100")).code).toBe(250);
  expect((await client.command("RCPT TO:<bob@local.example>")).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  const line = `${"x".repeat(76)}\r\n`;
  const body = `Subject: big\r\n\r\n${line.repeat(Math.ceil(4336 / line.length))}`.slice(0, 4334) + "\r\n";
  expect(Buffer.byteLength(body)).toBe(4336);
  client.write(body);
  expect(await client.silentFor(300)).toBe(true);
  client.write(".\r\n");
  expect(status(await client.read())).toBe("552 5.3.4");
  expect(await server.stored()).toEqual([]);
  expect(status(await client.command("NOOP"))).toBe("250 2.0.0");
  client.close();
});

test("a message of exactly the limit is accepted", async () => {
  server = await startProtocolServer({ limits: { maxMessageSize: 2000 } });
  const client = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  await client.command("RCPT TO:<bob@local.example>");
  const head = "Subject: fits\r\n\r\n";
  const body = head + "y".repeat(2000 - head.length - 2) + "\r\n";
  expect(status(await client.data(body))).toBe("250 2.0.0");
  expect(await server.stored()).toHaveLength(1);
  client.close();
});

test("a SIZE value that is not a number is a syntax error", async () => {
  server = await startProtocolServer({ limits: { maxMessageSize: 2000 } });
  const client = await server.ready();
  expect(status(await client.command("MAIL FROM:<a@sender.example> SIZE=abc"))).toBe("501 5.5.4");
  client.close();
});
