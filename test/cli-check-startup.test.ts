// `mailroom check` must fail on every config that `mailroom start` then
// rejects, with the message that start gives, and must give start's warnings.
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { BIN } from "./fault-kit.js";
import { makeCertificate, type TestCertificate } from "./tls-helpers.js";

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-check-start-"));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function mailroom(command: "check" | "start", file: string, ...options: string[]) {
  // A start that gets past its checks listens until SIGTERM; the timeout ends it.
  return spawnSync(process.execPath, [BIN, command, "--config", file, ...options], { cwd: dir, encoding: "utf8", timeout: 15_000 });
}

/** Binds `host:port` with Node's defaults and resolves with the error code, or undefined when the bind worked. */
async function bindError(servers: net.Server[], host: string, port: number): Promise<string | undefined> {
  const server = net.createServer();
  servers.push(server);
  return new Promise((resolve) => {
    server.once("error", (error: NodeJS.ErrnoException) => resolve(error.code));
    server.listen(port, host, () => resolve(undefined));
  });
}

async function writeConfig(text: string): Promise<string> {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, text);
  return file;
}

/** Returns a TCP port that was free a moment ago, for rules that skip port 0. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function tlsConfig(key: string, cert: string): string {
  return `server:\n  listen: ["127.0.0.1:0"]\n  tls:\n    key: ${key}\n    cert: ${cert}\nplugins: []\n`;
}

describe("check fails where start fails", () => {
  test("implicitTls listener without server.tls", async () => {
    const file = await writeConfig('server:\n  listen: [{ address: "127.0.0.1:0", implicitTls: true }]\nplugins: []\n');
    const message = `${file}:2: server.listen[0].implicitTls: listen 127.0.0.1:0 has implicitTls but server.tls is not configured`;

    const check = mailroom("check", file);
    expect(check.stderr).toContain(message);
    expect(check.status).toBe(1);

    const start = mailroom("start", file);
    expect(start.stderr).toContain(message);
    expect(start.status).toBe(1);
  });

  test("same listen address twice", async () => {
    const port = await freePort();
    const file = await writeConfig(`server:\n  listen:\n    - 127.0.0.1:${port}\n    - 127.0.0.1:${port}\nplugins: []\n`);
    const message = `${file}:4: server.listen[1].address: 127.0.0.1:${port} is already listed as listen[0]`;

    const check = mailroom("check", file);
    expect(check.stderr).toContain(message);
    expect(check.status).toBe(1);

    const start = mailroom("start", file);
    expect(start.stderr).toContain(message);
    expect(start.status).toBe(1);
  });

  test.runIf(process.platform === "linux")("wildcard and specific address on one port", async () => {
    const port = await freePort();
    const file = await writeConfig(`server:\n  listen:\n    - 0.0.0.0:${port}\n    - 127.0.0.1:${port}\nplugins: []\n`);

    const message = `${file}:4: server.listen[1]: 127.0.0.1:${port} overlaps listen[0] 0.0.0.0:${port}`;

    const check = mailroom("check", file);
    expect(check.stderr).toContain(message);
    expect(check.stderr).toContain("start would fail with EADDRINUSE");
    expect(check.status).toBe(1);

    const start = mailroom("start", file);
    expect(start.stderr).toContain(message);
    expect(start.status).toBe(1);

    // The rule must hold for the binds themselves, or it would reject a working config.
    const servers: net.Server[] = [];
    try {
      expect(await bindError(servers, "0.0.0.0", port)).toBeUndefined();
      expect(await bindError(servers, "127.0.0.1", port)).toBe("EADDRINUSE");
    } finally {
      for (const server of servers) server.close();
    }
  });

  test("addresses of different ports pass", async () => {
    const [first, second] = [await freePort(), await freePort()];
    const file = await writeConfig(`server:\n  listen: ["0.0.0.0:${first}", "127.0.0.1:${second}"]\nplugins: []\n`);
    const check = mailroom("check", file);
    expect(check.stderr).toBe("");
    expect(check.status).toBe(0);
  });
});

describe("start checks its --listen options", () => {
  test("same --listen twice is a usage error", async () => {
    const port = await freePort();
    const file = await writeConfig('server:\n  listen: ["127.0.0.1:0"]\nplugins: []\n');

    const same = mailroom("start", file, "--listen", `127.0.0.1:${port}`, "--listen", `127.0.0.1:${port}`);
    expect(same.stderr).toBe(
      `mailroom: start: --listen 127.0.0.1:${port} is given twice; the second listener would fail with EADDRINUSE, so give each address once\n`,
    );
    expect(same.stdout).toBe("");
    expect(same.status).toBe(2);

    const spelled = mailroom("start", file, "--listen", `[::1]:${port}`, "--listen", `[0:0::1]:${port}`);
    expect(spelled.stderr).toContain(`--listen [0:0::1]:${port} is the same address as --listen [::1]:${port}`);
    expect(spelled.status).toBe(2);
  });

  test.runIf(process.platform === "linux")("overlapping --listen is a usage error", async () => {
    const port = await freePort();
    const file = await writeConfig('server:\n  listen: ["127.0.0.1:0"]\nplugins: []\n');
    const start = mailroom("start", file, "--listen", `0.0.0.0:${port}`, "--listen", `127.0.0.1:${port}`);
    expect(start.stderr).toContain(`mailroom: start: --listen 127.0.0.1:${port} overlaps --listen 0.0.0.0:${port}, because on Linux 0.0.0.0:${port} takes port ${port} on every address`);
    expect(start.stdout).toBe("");
    expect(start.status).toBe(2);
  });

  test("port in use is logged once", async () => {
    const servers: net.Server[] = [];
    try {
      const port = await freePort();
      expect(await bindError(servers, "127.0.0.1", port)).toBeUndefined();
      const file = await writeConfig('server:\n  listen: ["127.0.0.1:0"]\nplugins: []\n');

      const start = mailroom("start", file, "--listen", `127.0.0.1:${port}`);
      expect(start.status).toBe(1);
      expect(start.stderr).toBe(`mailroom: start: listen failed: listen EADDRINUSE: address already in use 127.0.0.1:${port}\n`);
      const lines = start.stdout.split("\n").filter(Boolean).map((line) => JSON.parse(line));
      const mentions = lines.filter((line) => JSON.stringify(line).includes("EADDRINUSE"));
      expect(mentions.map((line) => line.msg)).toEqual(["listen failed"]);
      expect(lines.map((line) => line.msg)).not.toContain("connection error");
    } finally {
      for (const server of servers) server.close();
    }
  });
});

describe("check loads the TLS files", () => {
  let main: TestCertificate;
  let other: TestCertificate;

  beforeEach(async () => {
    [main, other] = await Promise.all([makeCertificate(dir, "main", "mx.test"), makeCertificate(dir, "other", "other.test")]);
  });

  test("valid key and certificate pass", async () => {
    const check = mailroom("check", await writeConfig(tlsConfig(main.keyPath, main.certPath)));
    expect(check.stderr).toBe("");
    expect(check.status).toBe(0);
  });

  test("key file that is not a key", async () => {
    const bad = path.join(dir, "bad-key.pem");
    await writeFile(bad, "not a key\n");
    const file = await writeConfig(tlsConfig(bad, main.certPath));

    const message = `${file}:4: server.tls.key: ${bad} is not a PEM private key (`;

    const check = mailroom("check", file);
    expect(check.stderr).toContain(message);
    expect(check.status).toBe(1);

    const start = mailroom("start", file);
    expect(start.stderr).toContain(message);
    expect(start.status).toBe(1);
  });

  test("certificate file that is not a certificate", async () => {
    const file = await writeConfig(tlsConfig(main.keyPath, main.keyPath));
    const check = mailroom("check", file);
    expect(check.stderr).toContain(`${file}:5: server.tls.cert: ${main.keyPath} is not a PEM certificate (`);
    expect(check.status).toBe(1);
  });

  test("key of another certificate", async () => {
    const file = await writeConfig(tlsConfig(other.keyPath, main.certPath));
    const check = mailroom("check", file);
    expect(check.stderr).toContain(`server.tls.cert: ${main.certPath} does not match the key ${other.keyPath} (`);
    expect(check.status).toBe(1);
  });

  test("empty key file", async () => {
    const empty = path.join(dir, "empty.pem");
    await writeFile(empty, "\n");
    const check = mailroom("check", await writeConfig(tlsConfig(empty, main.certPath)));
    expect(check.stderr).toContain(`server.tls.key: ${empty} is empty`);
    expect(check.status).toBe(1);
  });

  test("encrypted key file", async () => {
    const encrypted = path.join(dir, "encrypted.pem");
    const encrypt = spawnSync("openssl", ["pkey", "-in", main.keyPath, "-aes256", "-passout", "pass:secret", "-out", encrypted]);
    expect(encrypt.status).toBe(0);
    const check = mailroom("check", await writeConfig(tlsConfig(encrypted, main.certPath)));
    expect(check.stderr).toContain(`server.tls.key: ${encrypted} is an encrypted private key, and server.tls has no passphrase option`);
    expect(check.status).toBe(1);
  });

  test("broken SNI key names its entry", async () => {
    const bad = path.join(dir, "bad-key.pem");
    await writeFile(bad, "not a key\n");
    const sni = `    sni:\n      other.test: { key: ${bad}, cert: ${other.certPath} }\n`;
    const file = await writeConfig(tlsConfig(main.keyPath, main.certPath).replace("plugins: []\n", "") + sni);
    const check = mailroom("check", file);
    expect(check.stderr).toContain(`${file}:7: server.tls.sni.other.test.key: ${bad} is not a PEM private key (`);
    expect(check.status).toBe(1);
  });
});

describe("check gives start's warnings", () => {
  const WARNING = "listener requires AUTH but no plugin handles the auth hook, so every MAIL gets 530";

  test("requireAuth listener without an auth plugin", async () => {
    const file = await writeConfig('server:\n  listen: [{ address: "127.0.0.1:0", requireAuth: true }]\nplugins: []\n');
    const check = mailroom("check", file);
    expect(check.stdout).toContain(`warning: listen 127.0.0.1:0: ${WARNING}`);
    expect(check.status).toBe(0);
  });

  test("requireAuth listener without TLS", async () => {
    await writeFile(
      path.join(dir, "auth.ts"),
      'import { definePlugin } from "@mailroom/core";\n' +
        'export default definePlugin({ name: "auth", setup: () => ({ auth: () => undefined }) });\n',
    );
    const file = await writeConfig('server:\n  listen: [{ address: "127.0.0.1:0", requireAuth: true }]\nplugins:\n  - use: ./auth.ts\n');
    const check = mailroom("check", file);
    expect(check.stdout).toContain(
      "warning: listen 127.0.0.1:0: listener requires AUTH but offers it only over TLS, and server.tls is not configured for STARTTLS, " +
        "so every AUTH gets 538 and every MAIL 530; configure server.tls, or set server.allowInsecureAuth",
    );
    expect(check.stdout).not.toContain(WARNING);
    expect(check.status).toBe(0);
  });

  test("requireAuth listener with an auth plugin", async () => {
    await writeFile(
      path.join(dir, "auth.ts"),
      'import { definePlugin } from "@mailroom/core";\n' +
        'export default definePlugin({ name: "auth", setup: () => ({ auth: () => undefined }) });\n',
    );
    const file = await writeConfig('server:\n  listen: [{ address: "127.0.0.1:0", requireAuth: true }]\nplugins:\n  - use: ./auth.ts\n');
    const check = mailroom("check", file);
    expect(check.stdout).toContain("1. auth: auth");
    expect(check.stdout).not.toContain(WARNING);
    expect(check.status).toBe(0);
  });
});
