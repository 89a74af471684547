import { X509Certificate } from "node:crypto";
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { MailroomServer } from "@mailroom/core";
import { SmtpTestClient, startTestServer, type TestServer } from "@mailroom/testing";
import { pino } from "pino";
import { stringify } from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { makeCertificate, startTls, type TestCertificate } from "./tls-helpers.js";

let dir: string;
let main: TestCertificate;
let alpha: TestCertificate;
let beta: TestCertificate;

/** `server.tls` with paths relative to the config folder, as an operator writes them. */
const TLS_CONFIG = {
  key: "./certs/main.key",
  cert: "./certs/main.crt",
  sni: {
    "alpha.example": { key: "./certs/alpha.key", cert: "./certs/alpha.crt" },
    "BETA.example": { key: "./certs/beta.key", cert: "./certs/beta.crt" },
  },
};

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-tls-"));
  const certs = path.join(dir, "certs");
  await mkdir(certs);
  [main, alpha, beta] = await Promise.all([
    makeCertificate(certs, "main", "mx.test"),
    makeCertificate(certs, "alpha", "alpha.example"),
    makeCertificate(certs, "beta", "beta.example"),
  ]);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.reverse()) await stop();
  stops = [];
});

async function startServer(tls: object | null = TLS_CONFIG): Promise<TestServer> {
  const server = await startTestServer({ server: { hostname: "mx.test", ...(tls ? { tls } : {}) } }, { dir });
  stops.push(server.stop);
  return server;
}

async function connect(server: TestServer): Promise<SmtpTestClient> {
  const client = await server.connect();
  stops.push(async () => client.close());
  return client;
}

describe("STARTTLS", () => {
  test("EHLO offers STARTTLS when a certificate is configured", async () => {
    const client = await connect(await startServer());
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.code).toBe(250);
    expect(ehlo.lines).toContain("STARTTLS");
  });

  test("EHLO omits STARTTLS without a certificate", async () => {
    const client = await connect(await startServer(null));
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.lines).not.toContain("STARTTLS");
    const reply = await client.command("STARTTLS");
    expect(reply.code).toBe(502);
    expect(reply.enhanced).toBe("5.5.1");
  });

  test("STARTTLS with an argument is a syntax error", async () => {
    const client = await connect(await startServer());
    await client.command("EHLO client.example");
    const reply = await client.command("STARTTLS now");
    expect(reply.code).toBe(501);
    expect(reply.enhanced).toBe("5.5.4");
  });

  test("handshake presents the configured certificate", async () => {
    const client = await connect(await startServer());
    const presented = await startTls(client, { servername: "mx.test", certificate: main });
    expect(presented.fingerprint256).toBe(main.fingerprint);
    const ehlo = await client.command("EHLO client.example");
    expect(ehlo.code).toBe(250);
    expect(await client.command("NOOP")).toMatchObject({ code: 250, enhanced: "2.0.0" });
  });

  test("failed handshake closes only that connection", async () => {
    const server = await startServer();
    const broken = await connect(server);
    await broken.command("EHLO client.example");
    expect((await broken.command("STARTTLS")).code).toBe(220);
    broken.write("this is not a TLS ClientHello\r\n");
    await broken.closed(5000);

    const client = await connect(server);
    const presented = await startTls(client, { servername: "mx.test", certificate: main });
    expect(presented.fingerprint256).toBe(main.fingerprint);
  });

  test("second STARTTLS inside TLS is refused", async () => {
    const client = await connect(await startServer());
    await startTls(client, { servername: "mx.test", certificate: main });
    await client.command("EHLO client.example");
    const reply = await client.command("STARTTLS");
    expect(reply.code).toBe(503);
    expect(reply.enhanced).toBe("5.5.1");
  });
});

describe("SNI", () => {
  test("each server name gets its own certificate", async () => {
    const server = await startServer();
    const cases: [string, TestCertificate][] = [
      ["alpha.example", alpha],
      ["beta.example", beta],
      ["mx.test", main],
    ];
    for (const [servername, certificate] of cases) {
      const client = await connect(server);
      const presented = await startTls(client, { servername, certificate });
      expect(presented.fingerprint256, servername).toBe(certificate.fingerprint);
      expect(presented.subject.CN, servername).toBe(servername);
    }
  });

  test("server name lookup ignores case", async () => {
    const client = await connect(await startServer());
    const presented = await startTls(client, { servername: "ALPHA.Example", certificate: alpha });
    expect(presented.fingerprint256).toBe(alpha.fingerprint);
  });

  test("unknown server name gets the default certificate", async () => {
    const client = await connect(await startServer());
    const presented = await startTls(client, { servername: "unknown.example", certificate: main });
    expect(presented.fingerprint256).toBe(main.fingerprint);
  });
});

describe("certificate reload", () => {
  let reloadDir: string;
  let server: MailroomServer;

  afterEach(async () => {
    await server?.close();
    await rm(reloadDir, { recursive: true, force: true });
  });

  /** Starts a server from a config file, so that reload() can re-read it. */
  async function startFromFile(): Promise<{ port: number; implicitPort: number; certs: string }> {
    reloadDir = await mkdtemp(path.join(os.tmpdir(), "mailroom-tls-reload-"));
    const certs = path.join(reloadDir, "certs");
    await mkdir(certs);
    await Promise.all([
      makeCertificate(certs, "main", "mx.test"),
      makeCertificate(certs, "alpha", "alpha.example"),
      makeCertificate(certs, "beta", "beta.example"),
    ]);
    const file = path.join(reloadDir, "mailroom.yaml");
    const listen = ["127.0.0.1:0", { address: "127.0.0.1:0", implicitTls: true }];
    await writeFile(file, stringify({ server: { hostname: "mx.test", listen, tls: TLS_CONFIG } }));
    server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
    const [address, implicit] = await server.listen();
    return { port: address!.port, implicitPort: implicit!.port, certs };
  }

  async function handshake(port: number, servername: string, certificate: TestCertificate) {
    const client = await SmtpTestClient.connect(port);
    try {
      return await startTls(client, { servername, certificate });
    } finally {
      client.close();
    }
  }

  /** Opens an implicit TLS connection trusting only `certificate`; returns the presented fingerprint. */
  async function implicitHandshake(port: number, servername: string, certificate: TestCertificate) {
    const socket = tls.connect({ port, host: "127.0.0.1", servername, ca: certificate.pem });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("secureConnect", resolve);
        socket.once("error", reject);
      });
      return socket.getPeerCertificate().fingerprint256;
    } finally {
      socket.destroy();
    }
  }

  test("reload replaces the default and SNI certificates", async () => {
    const { port, implicitPort, certs } = await startFromFile();
    // A session opened before the reload keeps working after it.
    const open = await SmtpTestClient.connect(port);
    stops.push(async () => open.close());
    await open.command("EHLO client.example");

    const [newMain, newAlpha] = await Promise.all([
      makeCertificate(certs, "main", "mx.test"),
      makeCertificate(certs, "alpha", "alpha.example"),
    ]);
    expect(newMain.fingerprint).not.toBe(main.fingerprint);
    await server.reload();

    const presentedMain = await handshake(port, "mx.test", newMain);
    expect(presentedMain.fingerprint256).toBe(newMain.fingerprint);
    const presentedAlpha = await handshake(port, "alpha.example", newAlpha);
    expect(presentedAlpha.fingerprint256).toBe(newAlpha.fingerprint);
    expect(await implicitHandshake(implicitPort, "mx.test", newMain)).toBe(newMain.fingerprint);
    expect(await implicitHandshake(implicitPort, "alpha.example", newAlpha)).toBe(newAlpha.fingerprint);
    expect(await open.command("NOOP")).toMatchObject({ code: 250 });
  });

  test("reload cannot drop TLS under an implicit TLS listener", async () => {
    const { implicitPort, certs } = await startFromFile();
    const file = path.join(reloadDir, "mailroom.yaml");
    const listen = ["127.0.0.1:0", { address: "127.0.0.1:0", implicitTls: true }];
    await writeFile(file, stringify({ server: { hostname: "mx.test", listen } }));
    await expect(server.reload()).rejects.toThrow(/implicitTls but server\.tls is not configured/);

    // A reload does not change the listeners, so dropping the implicit TLS
    // entry together with server.tls still leaves that listener without TLS.
    await writeFile(file, stringify({ server: { hostname: "mx.test", listen: ["127.0.0.1:0"] } }));
    await expect(server.reload()).rejects.toThrow(/server\.tls is required while the implicitTls listener/);

    const current = await readPem(certs, "main");
    expect(await implicitHandshake(implicitPort, "mx.test", current)).toBe(current.fingerprint);
  });

  test("failed reload keeps the previous certificate", async () => {
    const { port, certs } = await startFromFile();
    const before = await handshake(port, "mx.test", await readPem(certs, "main"));
    await rename(path.join(certs, "main.key"), path.join(certs, "main.key.old"));

    await expect(server.reload()).rejects.toThrow(/main\.key/);

    const after = await handshake(port, "mx.test", await readPem(certs, "main"));
    expect(after.fingerprint256).toBe(before.fingerprint256);
  });
});

/** Reads a certificate that makeCertificate wrote earlier. */
async function readPem(certs: string, name: string): Promise<TestCertificate> {
  const pem = await readFile(path.join(certs, `${name}.crt`), "utf8");
  return {
    keyPath: path.join(certs, `${name}.key`),
    certPath: path.join(certs, `${name}.crt`),
    pem,
    fingerprint: new X509Certificate(pem).fingerprint256,
  };
}
