import { afterEach, expect, test } from "vitest";
import { startProtocolServer, status, type ProtocolServer } from "./protocol-kit.js";

let server: ProtocolServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

test("recipients past the limit get 452 and DATA proceeds for the accepted ones", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  let burst = "MAIL FROM:<a@sender.example>\r\n";
  for (let i = 0; i < 150; i++) burst += "RCPT TO:<bob@local.example>\r\n";
  client.write(burst);
  const replies = await client.readMany(151);
  expect(status(replies[0]!)).toBe("250 2.1.0");
  const rcpts = replies.slice(1).map(status);
  expect(rcpts.slice(0, 100).every((reply) => reply === "250 2.1.5")).toBe(true);
  expect(rcpts.slice(100).every((reply) => reply === "452 4.5.3")).toBe(true);
  expect(status(await client.data("Subject: many\r\n\r\nhi\r\n"))).toBe("250 2.0.0");
  const [stored] = await server.stored();
  expect(stored!.recipients).toHaveLength(100);
  client.close();
});

test("the recipient limit is configurable", async () => {
  server = await startProtocolServer({ limits: { maxRecipients: 2 } });
  const client = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  expect((await client.command("RCPT TO:<bob@local.example>")).code).toBe(250);
  expect((await client.command("RCPT TO:<alice@local.example>")).code).toBe(250);
  expect(status(await client.command("RCPT TO:<postmaster@local.example>"))).toBe("452 4.5.3");
  client.close();
});

test("a pipelined transaction with no valid recipient gets its replies in order and stores nothing", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  client.write("MAIL FROM:<a@sender.example>\r\nRCPT TO:<nouser@local.example>\r\nDATA\r\n");
  const replies = await client.readMany(3);
  expect(replies.map(status)).toEqual(["250 2.1.0", "550 5.1.1", "554 5.5.1"]);
  expect(await client.silentFor(200)).toBe(true);
  // Still in sync: the transaction is open and a new recipient works.
  expect(status(await client.command("RCPT TO:<bob@local.example>"))).toBe("250 2.1.5");
  expect(status(await client.command("RSET"))).toBe("250 2.0.0");
  expect(status(await client.command("NOOP"))).toBe("250 2.0.0");
  expect(await server.stored()).toEqual([]);
  client.close();
});
