import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, expect, test } from "vitest";
import { startProtocolServer, status, type ProtocolServer } from "./protocol-kit.js";

let certDir: string;
let server: ProtocolServer | undefined;

beforeAll(() => {
  certDir = mkdtempSync(path.join(os.tmpdir(), "mailroom-cert-"));
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mx.local.example",
      "-keyout", path.join(certDir, "key.pem"), "-out", path.join(certDir, "cert.pem")],
    { stdio: "ignore" },
  );
});
afterAll(() => rmSync(certDir, { recursive: true, force: true }));
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

function startTlsServer() {
  return startProtocolServer({
    tls: { key: path.join(certDir, "key.pem"), cert: path.join(certDir, "cert.pem") },
  });
}

test("a command pipelined in plaintext behind STARTTLS never gets a reply", async () => {
  server = await startTlsServer();
  const client = await server.ready();
  client.write("STARTTLS\r\nRSET\r\n");
  expect(status(await client.read())).toBe("220 2.0.0");
  await client.upgrade();
  const ehlo = await client.command("EHLO client.example");
  expect(ehlo.code).toBe(250);
  expect(status(await client.command("NOOP"))).toBe("250 2.0.0");
  expect(await client.silentFor(200)).toBe(true);
  client.close();
});

test("a partial plaintext command before the handshake is discarded, not joined to the next line", async () => {
  server = await startTlsServer();
  const client = await server.ready();
  client.write("STARTTLS\r\nMAIL FROM:<attacker@evil.example> X=");
  expect(status(await client.read())).toBe("220 2.0.0");
  await client.upgrade();
  const ehlo = await client.command("EHLO client.example");
  expect(ehlo.code).toBe(250);
  expect(ehlo.lines[0]).toContain("Hello client.example");
  expect(status(await client.command("MAIL FROM:<a@sender.example>"))).toBe("250 2.1.0");
  expect(status(await client.command("RCPT TO:<bob@local.example>"))).toBe("250 2.1.5");
  expect(status(await client.data("Subject: over tls\r\n\r\nhi\r\n"))).toBe("250 2.0.0");
  const stored = await server.stored();
  expect(stored.map((message) => message.sender)).toEqual(["a@sender.example"]);
  expect(stored[0]!.text).not.toContain("attacker@evil.example");
  client.close();
});
