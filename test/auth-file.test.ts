import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { container, MailroomServer, TOKENS, type Clock } from "@mailroom/core";
import { setPassword } from "@mailroom/plugin-auth-file";
import { captureLogs, SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { pino } from "pino";
import { stringify } from "yaml";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { base64, plainToken, readEnvelopes, writeSinkPlugin } from "./auth-helpers.js";
import { makeCertificate, startTls, type TestCertificate } from "./tls-helpers.js";

/** A cheap scrypt cost, so the tests do not spend their time hashing. */
const CHEAP = { N: 1024, r: 8, p: 1 };

let certificate: TestCertificate;
let certs: string;

beforeAll(async () => {
  certs = await mkdtemp(path.join(os.tmpdir(), "mailroom-auth-file-certs-"));
  certificate = await makeCertificate(certs, "mx", "mx.test");
});

afterAll(async () => {
  await rm(certs, { recursive: true, force: true });
});

let dir: string;
let server: TestServer | undefined;
const clients: SmtpTestClient[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-auth-file-"));
  await setPassword(path.join(dir, "users"), "alice", "correct horse", { cost: CHEAP });
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server?.stop();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

/** A clock whose sleep returns at once and records how long it was asked to wait. */
function recordingClock(): { clock: Clock; sleeps: number[] } {
  const sleeps: number[] = [];
  return {
    sleeps,
    clock: {
      now: () => Date.now(),
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    },
  };
}

function serverConfig(options: Record<string, unknown> = {}) {
  return {
    server: {
      hostname: "mx.test",
      listen: ["127.0.0.1:0"],
      tls: { key: certificate.keyPath, cert: certificate.certPath },
    },
    plugins: [
      { use: "@mailroom/plugin-auth-file", with: { file: "./users", ...options } },
      { use: "./sink.ts" },
    ],
  };
}

async function start(
  options: Record<string, unknown> = {},
  extra: { clock?: Clock; logLines?: string[] } = {},
): Promise<TestServer> {
  await writeSinkPlugin(dir);
  const parent = container.createChildContainer();
  if (extra.clock) parent.register(TOKENS.Clock, { useValue: extra.clock });
  const logger = extra.logLines ? captureLogs("trace", extra.logLines).logger : undefined;
  server = await startTestServer(serverConfig(options), { dir, container: parent, ...(logger ? { logger } : {}) });
  return server;
}

async function connectSecure(port = server!.port): Promise<SmtpTestClient> {
  const client = await SmtpTestClient.connect(port);
  clients.push(client);
  await startTls(client, { servername: "mx.test", certificate });
  expect((await client.command("EHLO client.example")).code).toBe(250);
  return client;
}

describe("file users", () => {
  test("user from the file authenticates", async () => {
    await start();
    const client = await connectSecure();
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines).toContain("AUTH PLAIN LOGIN");
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`);
    expect(reply).toMatchObject({ code: 235, enhanced: "2.7.0" });

    await client.send({ from: "alice@sender.example", to: ["bob@local.example"], message: "Subject: hi\r\n\r\nbody\r\n" });
    const [envelope] = await readEnvelopes(dir);
    expect(envelope!.user).toBe("alice");
  });

  test("LOGIN works against the file", async () => {
    await start();
    const client = await connectSecure();
    await client.command("AUTH LOGIN");
    await client.command(base64("alice"));
    expect((await client.command(base64("correct horse"))).code).toBe(235);
  });

  test("wrong password gets 535", async () => {
    await start({ failureDelay: 0 });
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", "correct horsE")}`);
    expect(reply).toMatchObject({ code: 535, enhanced: "5.7.8" });
  });

  test("unknown user gets 535", async () => {
    await start({ failureDelay: 0 });
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${plainToken("mallory", "correct horse")}`);
    expect(reply).toMatchObject({ code: 535, enhanced: "5.7.8" });
  });

  test("user names are case-sensitive", async () => {
    await start({ failureDelay: 0 });
    const client = await connectSecure();
    const reply = await client.command(`AUTH PLAIN ${plainToken("Alice", "correct horse")}`);
    expect(reply.code).toBe(535);
  });
});

test("file user may relay through plugin-relay", async () => {
  server = await startTestServer(
    {
      server: { hostname: "mx.test", tls: { key: certificate.keyPath, cert: certificate.certPath } },
      plugins: [
        { use: "@mailroom/plugin-relay", with: { localDomains: ["local.example"] } },
        { use: "@mailroom/plugin-auth-file", with: { file: "./users", failureDelay: 0 } },
        // Owns the outbound route, so relayed recipients are accepted at RCPT.
        { use: "@mailroom/plugin-mx", with: { queueDir: "./queue", deliver: false } },
      ],
    },
    { dir },
  );
  const anonymous = await connectSecure();
  await anonymous.command("MAIL FROM:<alice@sender.example>");
  expect(await anonymous.command("RCPT TO:<bob@remote.example>")).toMatchObject({ code: 550, enhanced: "5.7.1" });

  const client = await connectSecure();
  expect((await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`)).code).toBe(235);
  await client.command("MAIL FROM:<alice@sender.example>");
  expect(await client.command("RCPT TO:<bob@remote.example>")).toMatchObject({ code: 250 });
});

describe("failure delay", () => {
  test("wait doubles per failure on one connection, up to the cap", async () => {
    const { clock, sleeps } = recordingClock();
    await start({ failureDelay: 100, maxFailureDelay: 250, maxFailures: 10 }, { clock });
    const client = await connectSecure();
    for (const password of ["a", "b", "c", "d"]) {
      expect((await client.command(`AUTH PLAIN ${plainToken("alice", password)}`)).code).toBe(535);
    }
    expect(sleeps).toEqual([100, 200, 250, 250]);
  });

  test("each connection counts its own failures", async () => {
    const { clock, sleeps } = recordingClock();
    await start({ failureDelay: 100 }, { clock });
    const first = await connectSecure();
    await first.command(`AUTH PLAIN ${plainToken("alice", "a")}`);
    await first.command(`AUTH PLAIN ${plainToken("alice", "b")}`);
    const second = await connectSecure();
    await second.command(`AUTH PLAIN ${plainToken("mallory", "c")}`);
    expect(sleeps).toEqual([100, 200, 100]);
  });

  test("success does not wait", async () => {
    const { clock, sleeps } = recordingClock();
    await start({ failureDelay: 100 }, { clock });
    const client = await connectSecure();
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`)).code).toBe(235);
    expect(sleeps).toEqual([]);
  });

  test("failed attempt is answered after the delay", async () => {
    await start({ failureDelay: 300 });
    const client = await connectSecure();
    const started = performance.now();
    const reply = await client.command(`AUTH PLAIN ${plainToken("alice", "wrong")}`);
    const elapsed = performance.now() - started;
    expect(reply.code).toBe(535);
    expect(elapsed).toBeGreaterThanOrEqual(290);
  });

  test("connection closes after maxFailures", async () => {
    const { clock } = recordingClock();
    await start({ maxFailures: 2 }, { clock });
    const client = await connectSecure();
    expect((await client.command(`AUTH PLAIN ${plainToken("alice", "a")}`)).code).toBe(535);
    const last = await client.command(`AUTH PLAIN ${plainToken("alice", "b")}`);
    expect(last).toMatchObject({ code: 535, enhanced: "5.7.8" });
    await client.closed(5000);
    expect(client.isClosed).toBe(true);
  });
});

describe("user file errors", () => {
  test("invalid file stops startup with file and line", async () => {
    await writeFile(path.join(dir, "users"), "# users\nalice:not-a-hash\n");
    await expect(start()).rejects.toThrow(/auth-file failed to start: .*users:2: invalid password hash for alice/);
  });

  test("missing file stops startup", async () => {
    await rm(path.join(dir, "users"));
    await expect(start()).rejects.toThrow(/cannot read user file .*users: file not found/);
  });
});

describe("reload", () => {
  let fileServer: MailroomServer | undefined;
  afterEach(async () => {
    await fileServer?.close();
    fileServer = undefined;
  });

  async function startFromFile(): Promise<number> {
    await writeSinkPlugin(dir);
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, stringify(serverConfig({ failureDelay: 0 })));
    fileServer = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
    const [address] = await fileServer.listen();
    return address!.port;
  }

  async function tryAuth(port: number, user: string, password: string): Promise<number> {
    const client = await connectSecure(port);
    const reply = await client.command(`AUTH PLAIN ${plainToken(user, password)}`);
    client.close();
    return reply.code;
  }

  test("reload picks up users added with setPassword", async () => {
    const port = await startFromFile();
    await setPassword(path.join(dir, "users"), "bob", "bob's secret", { cost: CHEAP });
    await setPassword(path.join(dir, "users"), "alice", "new horse", { cost: CHEAP });
    expect(await tryAuth(port, "bob", "bob's secret")).toBe(535);

    await fileServer!.reload();

    expect(await tryAuth(port, "bob", "bob's secret")).toBe(235);
    expect(await tryAuth(port, "alice", "new horse")).toBe(235);
    expect(await tryAuth(port, "alice", "correct horse")).toBe(535);
  });

  test("failed reload keeps the previous users", async () => {
    const port = await startFromFile();
    await writeFile(path.join(dir, "users"), "alice:broken\n");

    await expect(fileServer!.reload()).rejects.toThrow(/users:1/);

    expect(await tryAuth(port, "alice", "correct horse")).toBe(235);
  });
});

test("file passwords never reach the log", async () => {
  const logLines: string[] = [];
  const { clock } = recordingClock();
  await start({}, { clock, logLines });
  const client = await connectSecure();
  await client.command(`AUTH PLAIN ${plainToken("alice", "wrong-secret-1")}`);
  await client.command(`AUTH PLAIN ${plainToken("mallory", "wrong-secret-2")}`);
  await client.command(`AUTH PLAIN ${plainToken("alice", "correct horse")}`);

  const log = logLines.join("");
  expect(log).toContain("authentication rejected");
  for (const secret of ["wrong-secret-1", "wrong-secret-2", "correct horse"]) {
    expect(log, secret).not.toContain(secret);
    expect(log, secret).not.toContain(base64(secret));
  }
});
