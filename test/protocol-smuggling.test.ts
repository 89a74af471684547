import { afterEach, describe, expect, test } from "vitest";
import { startProtocolServer, status, type ProtocolServer } from "./protocol-kit.js";

let server: ProtocolServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

const INNER = "MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<bob@local.example>\r\nDATA\r\n\r\nsecond\r\n.\r\n";
const TERMINATORS = ["\n.\r\n", "\n.\n", "\r\n.\n", "\r.\r\n"];

async function openTransaction(target: ProtocolServer) {
  const client = await target.ready();
  expect(status(await client.command("MAIL FROM:<a@sender.example>"))).toBe("250 2.1.0");
  expect(status(await client.command("RCPT TO:<bob@local.example>"))).toBe("250 2.1.5");
  expect((await client.command("DATA")).code).toBe(354);
  return client;
}

describe("strict line endings", () => {
  for (const terminator of TERMINATORS) {
    const shown = JSON.stringify(terminator);
    test(`a fake end of data ${shown} does not end DATA and the message is refused`, async () => {
      server = await startProtocolServer();
      const client = await openTransaction(server);
      client.write(`Subject: one\r\n\r\nfirst${terminator}${INNER}`);
      expect(status(await client.read())).toBe("554 5.6.0");
      // The smuggled MAIL, RCPT and DATA never got replies of their own.
      expect(await client.silentFor(300)).toBe(true);
      expect(await server.stored()).toEqual([]);
      expect((await client.command("NOOP")).code).toBe(250);
      client.close();
    });
  }

  test("a message with a bare CR is refused after the final dot", async () => {
    server = await startProtocolServer();
    const client = await openTransaction(server);
    client.write("Subject: cr\r\n\r\nline\rmore\r\n.\r\n");
    expect(status(await client.read())).toBe("554 5.6.0");
    expect(await server.stored()).toEqual([]);
    client.close();
  });

  test("commands ending in a bare LF are refused and never run", async () => {
    server = await startProtocolServer();
    const client = await server.connect();
    client.write("EHLO c.example\nMAIL FROM:<a@sender.example>\n");
    const [first, second] = await client.readMany(2);
    expect(status(first!)).toBe("500 5.5.2");
    expect(status(second!)).toBe("500 5.5.2");
    // EHLO did not run, so MAIL still needs a greeting first.
    expect(status(await client.command("MAIL FROM:<a@sender.example>"))).toBe("503 5.5.1");
    client.close();
  });

  test("a well-formed message with CRLF line endings is stored unchanged", async () => {
    server = await startProtocolServer();
    const client = await openTransaction(server);
    client.write("Subject: ok\r\n\r\nbody\r\n.\r\n");
    expect(status(await client.read())).toBe("250 2.0.0");
    const [stored] = await server.stored();
    expect(stored!.text.endsWith("\r\nSubject: ok\r\n\r\nbody\r\n")).toBe(true);
    client.close();
  });
});

describe("normalised line endings", () => {
  for (const terminator of TERMINATORS) {
    const shown = JSON.stringify(terminator);
    test(`a fake end of data ${shown} stays in the message, stored with CRLF`, async () => {
      server = await startProtocolServer({ lineEndings: "normalize" });
      const client = await openTransaction(server);
      client.write(`Subject: one\r\n\r\nfirst${terminator}${INNER}`);
      expect(status(await client.read())).toBe("250 2.0.0");
      expect(await client.silentFor(300)).toBe(true);
      const stored = await server.stored();
      expect(stored).toHaveLength(1);
      expect(stored[0]!.sender).toBe("a@sender.example");
      const body = stored[0]!.text.slice(stored[0]!.text.indexOf("Subject: one"));
      expect(body).not.toMatch(/\r(?!\n)|(?<!\r)\n/);
      expect(body).toContain("MAIL FROM:<ceo@bank.example>\r\n");
      client.close();
    });
  }
});
