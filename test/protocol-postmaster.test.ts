import { afterEach, expect, test } from "vitest";
import { startProtocolServer, status, type ProtocolServer } from "./protocol-kit.js";

let server: ProtocolServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

test("a bare <postmaster> recipient is accepted in any case and handed over without a domain", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  expect(status(await client.command("RCPT TO:<postmaster>"))).toBe("250 2.1.5");
  expect(status(await client.command("RCPT TO:<Postmaster>"))).toBe("250 2.1.5");
  expect(status(await client.data("Subject: to postmaster\r\n\r\nhi\r\n"))).toBe("250 2.0.0");
  const [stored] = await server.stored();
  expect(stored!.recipients).toEqual(["postmaster", "Postmaster"]);
  client.close();
});

test("a postmaster recipient without angle brackets is a syntax error", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  expect(status(await client.command("RCPT TO:Postmaster"))).toBe("501 5.5.4");
  client.close();
});

test("a bare <postmaster> is no valid sender", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  expect(status(await client.command("MAIL FROM:<postmaster>"))).toBe("501 5.1.7");
  client.close();
});
