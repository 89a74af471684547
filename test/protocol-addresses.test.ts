import { afterEach, expect, test } from "vitest";
import { startProtocolServer, status, type ProtocolServer } from "./protocol-kit.js";

let server: ProtocolServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function mail(target: ProtocolServer, command: string) {
  const client = await target.ready();
  const reply = await client.command(command);
  client.close();
  return status(reply);
}

test("a quoted local part with spaces, @ and > reaches plugins unquoted and is stored quoted", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  expect(status(await client.command('MAIL FROM:<"odd > name@x"@sender.example> BODY=8BITMIME'))).toBe("250 2.1.0");
  expect(status(await client.command('RCPT TO:<"b\\ob"@local.example>'))).toBe("250 2.1.5");
  expect(status(await client.data("Subject: quoted\r\n\r\nhi\r\n"))).toBe("250 2.0.0");
  const [stored] = await server.stored();
  expect(stored!.sender).toBe('"odd > name@x"@sender.example');
  expect(stored!.recipients).toEqual(["bob@local.example"]);
  expect(stored!.text.startsWith('Return-Path: <"odd > name@x"@sender.example>\r\n')).toBe(true);
  client.close();
});

test("a source route is accepted and ignored", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  await client.command("MAIL FROM:<@relay.example:a@sender.example>");
  expect(status(await client.command("RCPT TO:<@hop1.example,@hop2.example:bob@local.example>"))).toBe("250 2.1.5");
  expect(status(await client.data("Subject: routed\r\n\r\nhi\r\n"))).toBe("250 2.0.0");
  const [stored] = await server.stored();
  expect(stored).toMatchObject({ sender: "a@sender.example", recipients: ["bob@local.example"] });
  client.close();
});

test("an address literal is accepted as a sender domain", async () => {
  server = await startProtocolServer();
  expect(await mail(server, "MAIL FROM:<a@[192.0.2.1]>")).toBe("250 2.1.0");
  expect(await mail(server, "MAIL FROM:<a@[IPv6:2001:db8::1]>")).toBe("250 2.1.0");
});

test("a malformed sender path gets 501 5.1.7", async () => {
  server = await startProtocolServer();
  for (const path of ["a@@sender.example", "a b@sender.example", '"open@sender.example', "a@-x.example", "a@[300.1.1.1]"]) {
    expect(await mail(server, `MAIL FROM:<${path}>`), path).toBe("501 5.1.7");
  }
  expect(await mail(server, `MAIL FROM:<${"a".repeat(65)}@sender.example>`)).toBe("501 5.1.7");
});

test("a malformed recipient path gets 501 5.1.3 and the transaction stays open", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  for (const path of ["", "bob@@local.example", "bob@local..example", `${"b".repeat(65)}@local.example`]) {
    expect(status(await client.command(`RCPT TO:<${path}>`)), path).toBe("501 5.1.3");
  }
  expect(status(await client.command("RCPT TO:<bob@local.example>"))).toBe("250 2.1.5");
  client.close();
});

test("a path without angle brackets is a syntax error", async () => {
  server = await startProtocolServer();
  expect(await mail(server, "MAIL FROM:a@sender.example")).toBe("501 5.5.4");
  expect(await mail(server, "MAIL FROM:<a@sender.example>SIZE=1")).toBe("501 5.5.4");
});

test("a UTF-8 address needs SMTPUTF8 on MAIL", async () => {
  server = await startProtocolServer();
  expect(await mail(server, "MAIL FROM:<jörg@sender.example>")).toBe("501 5.1.7");
  const client = await server.ready();
  expect(status(await client.command("MAIL FROM:<jörg@bücher.example> SMTPUTF8"))).toBe("250 2.1.0");
  expect(status(await client.command("RCPT TO:<bob@local.example>"))).toBe("250 2.1.5");
  expect(status(await client.data("Subject: utf8\r\n\r\nhi\r\n"))).toBe("250 2.0.0");
  const [stored] = await server.stored();
  expect(stored!.sender).toBe("jörg@bücher.example");
  // RFC 6531's protocol name for ESMTP with SMTPUTF8.
  expect(stored!.text).toMatch(/^\tby mx\.local\.example \(Mailroom\) with UTF8SMTP id /m);
  // The next transaction without SMTPUTF8 is ASCII again.
  await client.command("MAIL FROM:<a@sender.example>");
  expect(status(await client.command("RCPT TO:<jörg@local.example>"))).toBe("501 5.1.3");
  client.close();
});

test("MAIL parameters are checked", async () => {
  server = await startProtocolServer();
  expect(await mail(server, "MAIL FROM:<a@sender.example> BODY=7BIT")).toBe("250 2.1.0");
  expect(await mail(server, "MAIL FROM:<a@sender.example> body=8bitmime size=10")).toBe("250 2.1.0");
  expect(await mail(server, "MAIL FROM:<a@sender.example> BODY=BINARYMIME")).toBe("501 5.5.4");
  expect(await mail(server, "MAIL FROM:<a@sender.example> SMTPUTF8=yes")).toBe("501 5.5.4");
  expect(await mail(server, "MAIL FROM:<a@sender.example> SIZE")).toBe("501 5.5.4");
  expect(await mail(server, "MAIL FROM:<a@sender.example> SIZE=-1")).toBe("501 5.5.4");
});

test("an unknown parameter gets 555 5.5.4", async () => {
  server = await startProtocolServer();
  expect(await mail(server, "MAIL FROM:<a@sender.example> X-FOO=1")).toBe("555 5.5.4");
  const client = await server.ready();
  await client.command("MAIL FROM:<a@sender.example>");
  expect(status(await client.command("RCPT TO:<bob@local.example> NOTIFY=NEVER"))).toBe("555 5.5.4");
  client.close();
});

test("a parameter given twice gets 501 5.5.4", async () => {
  server = await startProtocolServer();
  expect(await mail(server, "MAIL FROM:<a@sender.example> SIZE=10 size=10")).toBe("501 5.5.4");
  expect(await mail(server, "MAIL FROM:<a@sender.example> BODY=7BIT BODY=8BITMIME")).toBe("501 5.5.4");
});

test("the null sender is accepted, a null recipient is not", async () => {
  server = await startProtocolServer();
  const client = await server.ready();
  expect(status(await client.command("MAIL FROM:<> SIZE=900 BODY=8BITMIME"))).toBe("250 2.1.0");
  expect(status(await client.command("RCPT TO:<>"))).toBe("501 5.1.3");
  expect(status(await client.command("RCPT TO:<bob@local.example>"))).toBe("250 2.1.5");
  expect(status(await client.data("Subject: report\r\n\r\nhi\r\n"))).toBe("250 2.0.0");
  const [stored] = await server.stored();
  expect(stored!.text.startsWith("Return-Path: <>\r\n")).toBe(true);
  client.close();
});
