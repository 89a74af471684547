import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SmtpTestClient } from "@mailroom/testing";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { makeCertificate, type Validity } from "./tls-helpers.js";

const BIN = fileURLToPath(new URL("../packages/cli/bin/mailroom.js", import.meta.url));

// A local plugin in a folder outside the repository: it must find
// @mailroom/core and zod through the running server.
const PLUGIN = `
import { definePlugin, deny, z } from "@mailroom/core";

export default definePlugin({
  name: "greeter",
  options: z.object({ reject: z.string() }),
  setup({ options }) {
    return {
      mail: ({ address }) =>
        address?.address === options.reject ? deny({ code: 550, enhanced: "5.7.1", message: "Listed" }) : undefined,
    };
  },
});
`;

function config(reject: string): string {
  return `server:
  hostname: mx.cli.test
  listen: ["127.0.0.1:0"]
  shutdownTimeout: 5s
plugins:
  - use: ./greeter.ts
    with: { reject: "${reject}" }
`;
}

let dir: string;
let child: ChildProcess | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-cli-"));
  await writeFile(path.join(dir, "greeter.ts"), PLUGIN);
});

afterEach(async () => {
  child?.kill("SIGKILL");
  child = undefined;
  await rm(dir, { recursive: true, force: true });
});

function run(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 20_000 });
}

/** Starts `mailroom start` and resolves with the port from its "listening" log line. */
function start(file: string): Promise<{ port: number; logs: () => string }> {
  child = spawn(process.execPath, [BIN, "start", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stderr!.on("data", (chunk) => (output += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 15_000);
    child!.stdout!.on("data", (chunk: Buffer) => {
      output += chunk;
      const line = output.split("\n").find((text) => text.includes('"msg":"listening"'));
      if (line) {
        clearTimeout(timer);
        resolve({ port: JSON.parse(line).port, logs: () => output });
      }
    });
    child!.once("exit", (code) => reject(new Error(`server exited with ${code}:\n${output}`)));
  });
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** Returns the validity period from `fromDays` to `toDays` days after now. Negative values lie in the past. */
function daysFromNow(fromDays: number, toDays: number): Validity {
  return { notBefore: new Date(Date.now() + fromDays * DAY_MS), notAfter: new Date(Date.now() + toDays * DAY_MS) };
}

/** Formats a certificate date as the warnings print it: ISO 8601 in UTC, to the second. */
function certificateDate(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** `config(reject)` with `server.tls` set to ./certs/mx.key and ./certs/mx.crt. */
function tlsConfig(reject: string): string {
  return config(reject).replace("  shutdownTimeout: 5s\n", "  shutdownTimeout: 5s\n  tls: { key: ./certs/mx.key, cert: ./certs/mx.crt }\n");
}

function exited(process: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => process.once("exit", (code) => resolve(code)));
}

/** Runs `body` with an empty read-only tmpfs mounted at `folder`, which it creates; the tests run as root. */
async function withReadOnlyFolder(folder: string, body: () => Promise<void>): Promise<void> {
  await mkdir(folder);
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", folder]);
  if (mounted.status !== 0) throw new Error(`mount failed (tests run as root): ${mounted.stderr}`);
  try {
    await body();
  } finally {
    spawnSync("umount", [folder]);
  }
}

describe("mailroom check", () => {
  test("valid config lists plugins and hooks", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("x@y.test"));
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("1. greeter: mail");
  });

  test("invalid option names file, line and path", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("x@y.test").replace("shutdownTimeout: 5s", "shutdownTimeout: soon"));
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${file}:4: server.shutdownTimeout: expected a duration`);
  });

  test("YAML syntax error names position and reason", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, "server:\n\thostname: mx.cli.test\n");
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${file}:2:1: invalid YAML: Tabs are not allowed as indentation. Line 2 is "\\thostname: mx.cli.test"\n`);
    expect(result.stderr).not.toMatch(/column \d+:\s*$/m);
  });

  test("invalid plugin option names the plugin", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("x").replace('reject: "x"', "reject: 5"));
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/invalid options for plugin greeter:\n.*mailroom\.yaml:7: plugins\[0\]\.with\.reject: /);
  });

  test("durations and sizes past their limits fail", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const limits = "  hookTimeout: 30d\n  limits: { maxMessageSize: 1e30 }\nplugins:";
    await writeFile(file, config("x").replace("plugins:", limits));
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(
      "mailroom.yaml:5: server.hookTimeout: expected a duration of at most 24.8 days (2147483647 ms), the longest delay a Node.js timer can wait, received \"30d\"",
    );
    expect(result.stderr).toContain("mailroom.yaml:6: server.limits.maxMessageSize: expected a size of at most 9007199254740991 octets, received 1e+30");
  });

  test("risky setup prints warnings", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("x@y.test").replace('reject: "x@y.test"', 'reject: "x@y.test", trustedNetworks: ["0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1", "192.0.2.0/24"]'));
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("warning: no plugin handles rcpt");
    expect(result.stdout).toContain("trustedNetworks contains 0.0.0.0/0: this is an open relay");
    expect(result.stdout).toContain("trustedNetworks contains 0.0.0.0/1, 128.0.0.0/1: ranges this wide");
  });

  test("mapped IPv4 ranges print warnings", async () => {
    // plugin-relay reads ::ffff:0:0/96 as 0.0.0.0/0 and ::ffff:0.0.0.0/100 as 0.0.0.0/4.
    const file = path.join(dir, "mailroom.yaml");
    const networks = '["::ffff:0:0/96", "::FFFF:0.0.0.0/96", "::ffff:0.0.0.0/100", "::ffff:192.0.2.0/120"]';
    await writeFile(file, config("x@y.test").replace('reject: "x@y.test"', `reject: "x@y.test", trustedNetworks: ${networks}`));
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("trustedNetworks contains ::ffff:0:0/96, ::FFFF:0.0.0.0/96: this is an open relay");
    expect(result.stdout).toContain("trustedNetworks contains ::ffff:0.0.0.0/100: ranges this wide");
    expect(result.stdout).not.toContain("::ffff:192.0.2.0/120");
  });

  test("relay without storage prints a warning", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const relay = `  - use: "@mailroom/plugin-relay"\n    with: { trustedNetworks: ["127.0.0.0/8"] }\n`;
    await writeFile(file, config("x@y.test") + relay);
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      "warning: no plugin stores mail: none registers a route (as plugin-maildir and plugin-mx do with registerRoute), so every recipient that a plugin accepts gets 451 4.3.0 at RCPT",
    );
    expect(result.stdout).not.toContain("no plugin handles rcpt");
  });

  test("relay without plugin-mx prints a warning", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const maildir = `  - use: "@mailroom/plugin-maildir"\n    with: { root: ./mail, domains: { "a.test": { mailboxes: [bob] } } }\n`;
    const relaying = `  - use: "@mailroom/plugin-relay"\n    with: { trustedNetworks: ["127.0.0.0/8"] }\n`;
    await writeFile(file, config("x@y.test") + relaying + maildir);
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      'warning: plugins[1] (@mailroom/plugin-relay): some clients may relay, but no plugin registers the route "outbound" (add @mailroom/plugin-mx), so every recipient in another domain gets 451 4.3.0 at RCPT',
    );
    expect(result.stdout).not.toContain("no plugin stores mail");

    // Without trusted networks, relay domains or an AUTH plugin, nobody relays: an MX only setup.
    await writeFile(file, `${config("x@y.test")}  - use: "@mailroom/plugin-relay"\n${maildir}`);
    const mxOnly = run(["check", "--config", file]);
    expect(mxOnly.status).toBe(0);
    expect(mxOnly.stdout).not.toContain("warning");
  });

  test("relay with plugin-mx prints no storage warning", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const plugins =
      `  - use: "@mailroom/plugin-relay"\n    with: { trustedNetworks: ["127.0.0.0/8"] }\n` +
      `  - use: "@mailroom/plugin-mx"\n    with: { queueDir: ./queue, deliver: false }\n`;
    await writeFile(file, config("x@y.test") + plugins);
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).not.toContain("warning: no plugin");
    expect(result.stdout).not.toContain("no queue handler");
  });

  test("route without a queue handler prints a warning", async () => {
    await writeFile(
      path.join(dir, "boxes.ts"),
      'import { definePlugin, ok } from "@mailroom/core";\n' +
        'export default definePlugin({ name: "boxes", setup({ registerRoute }) { registerRoute("box"); return { rcpt: () => ok() }; } });\n',
    );
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, `${config("x@y.test")}  - use: ./boxes.ts\n`);
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      'warning: route "box" is registered by plugin boxes, which has no queue handler, so every message with a recipient on it gets 451 4.3.0 after DATA',
    );
    expect(result.stdout).not.toContain("no plugin stores mail");
  });

  test("read-only maildir root prints a warning", async () => {
    const readOnly = path.join(dir, "readonly");
    await withReadOnlyFolder(readOnly, async () => {
      const file = path.join(dir, "mailroom.yaml");
      const maildir = `  - use: "@mailroom/plugin-maildir"\n    with: { root: ./readonly/mail, domains: { "a.test": { mailboxes: [bob] } } }\n`;
      await writeFile(file, config("x@y.test") + maildir);
      const result = run(["check", "--config", file]);
      expect(result.status).toBe(0);
      expect(result.stdout).toContain(`maildir root ${path.join(readOnly, "mail")} is not writable`);
      expect(result.stdout).not.toContain("no plugin handles rcpt");
      expect(result.stdout).not.toContain("no plugin stores mail");
    });
  });

  test("maildir root under a file prints a warning", async () => {
    await writeFile(path.join(dir, "afile"), "not a folder\n");
    const file = path.join(dir, "mailroom.yaml");
    const maildir = `  - use: "@mailroom/plugin-maildir"\n    with: { root: ./afile/mail, domains: { "a.test": { mailboxes: [bob] } } }\n`;
    await writeFile(file, config("x@y.test") + maildir);
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(`maildir root ${path.join(dir, "afile/mail")} cannot be created: ${path.join(dir, "afile")} is not a folder`);
  });

  test("check creates no queue folder", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const mx = '  - use: "@mailroom/plugin-mx"\n    with: { queueDir: ./var/queue, deliver: false }\n';
    await writeFile(file, config("x@y.test") + mx);
    const result = run(["check", "--config", file]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("2. mx: queue; routes: outbound");
    expect(result.stdout).not.toContain("queueDir");
    await expect(readdir(dir)).resolves.not.toContain("var");

    // start still creates the folders.
    await start(file);
    await expect(readdir(path.join(dir, "var/queue"))).resolves.toEqual(expect.arrayContaining(["active", "claimed", "corrupt", "tmp"]));
  });

  test("queue folder under a file prints a warning", async () => {
    await writeFile(path.join(dir, "afile"), "not a folder\n");
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, `${config("x@y.test")}  - use: "@mailroom/plugin-mx"\n    with: { queueDir: ./afile/queue }\n`);
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      `warning: plugins[1] (@mailroom/plugin-mx): queueDir ${path.join(dir, "afile/queue")} cannot be created: ${path.join(dir, "afile")} is not a folder\n`,
    );
  });

  test("read-only queue folder prints a warning", async () => {
    const readOnly = path.join(dir, "readonly");
    await withReadOnlyFolder(readOnly, async () => {
      const file = path.join(dir, "mailroom.yaml");
      await writeFile(file, `${config("x@y.test")}  - use: "@mailroom/plugin-mx"\n    with: { queueDir: ./readonly/queue }\n`);
      const result = run(["check", "--config", file]);
      expect(result.status).toBe(0);
      expect(result.stdout).toContain(`queueDir ${path.join(readOnly, "queue")} is not writable (checked ${readOnly})`);
    });
  });

  test("smarthost and routes on loopback print warnings", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const mx = (extra: string) =>
      '  - use: "@mailroom/plugin-mx"\n' +
      "    with:\n" +
      "      deliver: false\n" +
      extra +
      "      smarthost: { host: 127.0.0.1, port: 10025, tls: none }\n" +
      "      routes:\n" +
      "        Filter.Test: { host: localhost, port: 10026 }\n" +
      '        six.test: { host: "::1", port: 10027 }\n' +
      '        bracketed.test: { host: "[IPv6:0:0:0:0:0:0:0:1]" }\n' +
      "        mapped.test: { host: \"::ffff:127.0.0.2\" }\n" +
      "        any.test: { host: 0.0.0.0 }\n" +
      "        named.test: { host: scanner.localhost. }\n" +
      "        allowed.test: { host: 127.0.0.1, port: 10028, allowLocal: true }\n" +
      "        remote.test: { host: 192.0.2.1 }\n" +
      "        dns.test: { host: relay.example.net }\n";
    await writeFile(file, config("x@y.test") + mx(""));
    const result = run(["check", "--config", file]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const where = "warning: plugins[1] (@mailroom/plugin-mx)";
    const tail = (option: string) =>
      `The loop guard rejects it, so every message routed there is deferred and bounced after maxQueueLifetime. Set ${option}.allowLocal: true if a local service listens there\n`;
    expect(result.stdout).toContain(`${where}: smarthost.host 127.0.0.1 is a loopback address. ${tail("smarthost")}`);
    expect(result.stdout).toContain(`${where}: routes["filter.test"].host localhost is a loopback name. ${tail('routes["filter.test"]')}`);
    expect(result.stdout).toContain(`${where}: routes["six.test"].host ::1 is a loopback address. ${tail('routes["six.test"]')}`);
    expect(result.stdout).toContain(`${where}: routes["bracketed.test"].host [IPv6:0:0:0:0:0:0:0:1] is a loopback address.`);
    expect(result.stdout).toContain(`${where}: routes["mapped.test"].host ::ffff:127.0.0.2 is a loopback address.`);
    expect(result.stdout).toContain(`${where}: routes["any.test"].host 0.0.0.0 is the unspecified address.`);
    expect(result.stdout).toContain(`${where}: routes["named.test"].host scanner.localhost. is a loopback name.`);
    expect(result.stdout.match(/loop guard/g)).toHaveLength(7);
    expect(result.stdout).not.toContain("allowed.test");
    expect(result.stdout).not.toContain("remote.test");
    expect(result.stdout).not.toContain("dns.test");

    // allowLocalDestinations turns the loop guard off for every destination.
    await writeFile(file, config("x@y.test") + mx("      allowLocalDestinations: true\n"));
    const guardOff = run(["check", "--config", file]);
    expect(guardOff.status).toBe(0);
    expect(guardOff.stdout).not.toContain("loop guard");
  });

  test("read-only spool folder prints a warning", async () => {
    const readOnly = path.join(dir, "spool");
    await withReadOnlyFolder(readOnly, async () => {
      const file = path.join(dir, "mailroom.yaml");
      await writeFile(file, config("x@y.test").replace("  shutdownTimeout: 5s\n", "  shutdownTimeout: 5s\n  spoolDir: ./spool\n"));
      const result = run(["check", "--config", file]);
      expect(result.status).toBe(0);
      expect(result.stdout).toContain(`server.spoolDir ${readOnly} is not writable`);
    });
  });

  test("spool folder that cannot be made names the option", async () => {
    await writeFile(path.join(dir, "afile"), "not a folder\n");
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("x@y.test").replace("  shutdownTimeout: 5s\n", "  shutdownTimeout: 5s\n  spoolDir: ./afile/spool\n"));
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`server.spoolDir ${path.join(dir, "afile/spool")} cannot be created`);
  });

  test("memory spool sizes that cannot work print warnings", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const sizes = "  memorySpool: { perMessage: 30MB, total: 10MB }\n";
    await writeFile(file, config("x@y.test").replace("  shutdownTimeout: 5s\n", `  shutdownTimeout: 5s\n${sizes}`));
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("server.memorySpool.perMessage (31457280 octets) is larger than memorySpool.total (10485760)");
    expect(result.stdout).toContain("is above limits.maxMessageSize (26214400)");
  });

  test("setup that never finishes is reported", async () => {
    await writeFile(
      path.join(dir, "stuck.ts"),
      'import { definePlugin } from "@mailroom/core";\n' +
        "export default definePlugin({ name: \"stuck\", setup: () => new Promise(() => {}) });\n",
    );
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, "server:\n  setupTimeout: 500ms\nplugins:\n  - use: ./stuck.ts\n");
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${file}:4: plugin stuck failed to start: setup did not finish within 500 ms`);
  });

  test("missing TLS key names the option and line", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, "server:\n  tls:\n    key: ./missing-key.pem\n    cert: ./missing-cert.pem\n");
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${file}:3: server.tls.key: cannot read ${path.join(dir, "missing-key.pem")}`);
  });

  test("out-of-date TLS certificates print warnings", async () => {
    const certs = path.join(dir, "certs");
    await mkdir(certs);
    const validity = {
      expired: daysFromNow(-400, -30),
      future: daysFromNow(30, 400),
      soon: daysFromNow(-30, 5),
      current: daysFromNow(-1, 365),
    };
    const [expired, future, soon, current] = await Promise.all(
      Object.entries(validity).map(([name, dates]) => makeCertificate(certs, name, `${name}.example`, dates)),
    );
    // A chain whose second certificate has expired, after a current one.
    const chainPath = path.join(certs, "chain.crt");
    await writeFile(chainPath, current!.pem + expired!.pem);
    const file = path.join(dir, "mailroom.yaml");
    const sni = (name: string, files = name) => `      ${name}.example: { key: ./certs/${files}.key, cert: ./certs/${files}.crt }\n`;
    const chain = "      chain.example: { key: ./certs/current.key, cert: ./certs/chain.crt }\n";
    const entries = `${sni("future")}${sni("soon")}${sni("current")}${sni("alias", "expired")}${chain}`;
    const tls = `  tls:\n    key: ./certs/expired.key\n    cert: ./certs/expired.crt\n    sni:\n${entries}`;
    await writeFile(file, config("x@y.test").replace("  shutdownTimeout: 5s\n", `  shutdownTimeout: 5s\n${tls}`));

    const result = run(["check", "--config", file]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      `warning: server.tls.cert: certificate ${expired!.certPath} (subject CN=expired.example) expired on ${certificateDate(validity.expired.notAfter)}`,
    );
    expect(result.stdout).toContain(
      `warning: server.tls.sni.future.example.cert: certificate ${future!.certPath} (subject CN=future.example) is not valid before ${certificateDate(validity.future.notBefore)}`,
    );
    expect(result.stdout).toContain(
      `warning: server.tls.sni.soon.example.cert: certificate ${soon!.certPath} (subject CN=soon.example) expires on ${certificateDate(validity.soon.notAfter)}, less than 14 days from now`,
    );
    expect(result.stdout).toContain(
      `warning: server.tls.sni.chain.example.cert: certificate ${chainPath} (subject CN=expired.example) expired on ${certificateDate(validity.expired.notAfter)}`,
    );
    expect(result.stdout).not.toContain(current!.certPath);
    // The default certificate's file, named again by the alias entry, is reported once.
    expect(result.stdout.split(`certificate ${expired!.certPath} `)).toHaveLength(2);
    expect(result.stdout).not.toContain("private key");
  });

  test("TLS key open to other users prints a warning", async () => {
    const certs = path.join(dir, "certs");
    await mkdir(certs);
    const { keyPath } = await makeCertificate(certs, "mx", "mx.cli.test");
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, tlsConfig("x@y.test"));

    for (const mode of [0o640, 0o604, 0o620]) {
      await chmod(keyPath, mode);
      const result = run(["check", "--config", file]);
      expect(result.status).toBe(0);
      expect(result.stdout).toContain(
        `warning: server.tls.key: private key ${keyPath} is accessible to its group or other users (mode ${mode.toString(8)}). Run chmod 600 on it`,
      );
    }

    await chmod(keyPath, 0o600);
    const result = run(["check", "--config", file]);
    expect(result.status).toBe(0);
    expect(result.stdout).not.toContain("private key");
    expect(result.stdout).not.toContain("certificate");
  });

  test("version option prints the version", () => {
    const result = run(["--version"]);
    expect(result.status).toBe(0);
    expect(result.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  test("unknown option is a usage error", () => {
    const result = run(["check", "--bogus"]);
    expect(result.status).toBe(2);
  });

  test("help marks --config required", () => {
    for (const command of [["start"], ["check"], ["queue", "list"], ["queue", "retry"]]) {
      const result = run([...command, "--help"]);
      expect(result.status, command.join(" ")).toBe(0);
      expect(result.stdout, command.join(" ")).toMatch(/-c, --config <file> +path of the YAML config file \(required\)\n/);
    }
  });

  test("new plugin help explains --dir", () => {
    const result = run(["new", "plugin", "--help"]);
    expect(result.status).toBe(0);
    expect(result.stdout.replace(/\s+/g, " ")).toContain("a package goes in DIR/NAME, a --local plugin in DIR/NAME.ts and DIR/NAME.test.ts");
  });

  test("missing --config is a usage error", () => {
    for (const command of ["start", "check"]) {
      const result = run([command]);
      expect(result.status, command).toBe(2);
      expect(result.stderr, command).toContain("error: required option '-c, --config <file>' not specified\n");
      expect(result.stderr, command).toMatch(/-c, --config <file> +path of the YAML config file \(required\)\n/);
    }
  });

  test("metrics on an SMTP listener's address fails", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("x@y.test").replace('listen: ["127.0.0.1:0"]', 'listen: ["127.0.0.1:2525"]\n  metrics: { listen: "127.0.0.1:2525" }'));
    const message =
      `${file}:4: server.metrics.listen: 127.0.0.1:2525 is also the address of the SMTP listener listen[0] 127.0.0.1:2525; ` +
      "start would fail with EADDRINUSE, so give the metrics server a port that no listener uses\n";
    for (const command of ["check", "start"]) {
      const result = run([command, "--config", file]);
      expect(result.status, command).toBe(1);
      expect(result.stderr, command).toBe(`mailroom: ${message}`);
    }
  });

  test("missing config file exits with 1", () => {
    const result = run(["check", "--config", path.join(dir, "none.yaml")]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/cannot read the config file/);
  });
});

describe("mailroom start", () => {
  test("serves, reloads on SIGHUP and exits 0 on SIGTERM", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("first@sender.test"));
    const { port, logs } = await start(file);

    const before = await SmtpTestClient.connect(port);
    expect(before.greeting.raw).toMatch(/^220 mx\.cli\.test ESMTP/);
    await before.command("EHLO client.test");
    expect((await before.command("MAIL FROM:<first@sender.test>")).code).toBe(550);
    before.close();

    await writeFile(file, config("second@sender.test"));
    child!.kill("SIGHUP");
    await expect.poll(() => logs(), { timeout: 10_000 }).toContain('"msg":"config reloaded"');

    const after = await SmtpTestClient.connect(port);
    await after.command("EHLO client.test");
    expect((await after.command("MAIL FROM:<first@sender.test>")).code).toBe(250);
    await after.command("RSET");
    expect((await after.command("MAIL FROM:<second@sender.test>")).code).toBe(550);
    after.close();

    const exit = exited(child!);
    child!.kill("SIGTERM");
    expect(await exit).toBe(0);
  });

  test("invalid config on SIGHUP keeps the old one", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("first@sender.test"));
    const { port, logs } = await start(file);

    await writeFile(file, "server: [");
    child!.kill("SIGHUP");
    await expect.poll(() => logs(), { timeout: 10_000 }).toContain("config reload failed");
    const failure = logs()
      .split("\n")
      .find((line) => line.includes("config reload failed"));
    expect(JSON.parse(failure!).problem).toBe(
      `${file}:1:10: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ] (at the end of the file)`,
    );

    const client = await SmtpTestClient.connect(port);
    await client.command("EHLO client.test");
    expect((await client.command("MAIL FROM:<first@sender.test>")).code).toBe(550);
    client.close();
  });

  test("SIGHUP with an invalid later plugin keeps the old routing", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const routing = (domain: string) => `server:
  listen: ["127.0.0.1:0"]
plugins:
  - use: "@mailroom/plugin-relay"
  - use: "@mailroom/plugin-maildir"
    with: { root: ./mail, domains: { ${domain}: { mailboxes: [alice] } } }
`;
    await writeFile(file, routing("live.test"));
    const { port, logs } = await start(file);

    const invalidRelay = '  - use: "@mailroom/plugin-relay"\n    with: { allowAuthenticated: "maybe" }\n';
    await writeFile(file, routing("renamed.test") + invalidRelay);
    child!.kill("SIGHUP");
    await expect.poll(() => logs(), { timeout: 10_000 }).toContain("config reload failed");

    const client = await SmtpTestClient.connect(port);
    await client.command("EHLO client.test");
    await client.command("MAIL FROM:<a@sender.test>");
    expect((await client.command("RCPT TO:<alice@live.test>")).code).toBe(250);
    expect((await client.command("RCPT TO:<alice@renamed.test>")).enhanced).toBe("5.7.1");
    client.close();
  });

  test("changed spool folder on SIGHUP is reported", async () => {
    const file = path.join(dir, "mailroom.yaml");
    const withSpool = (folder: string) =>
      config("x@y.test").replace("  shutdownTimeout: 5s\n", `  shutdownTimeout: 5s\n  spoolDir: ./${folder}\n`);
    await writeFile(file, withSpool("spool-one"));
    const { logs } = await start(file);
    await writeFile(file, withSpool("spool-two"));
    child!.kill("SIGHUP");
    await expect.poll(() => logs(), { timeout: 10_000 }).toContain('"msg":"config reloaded"');
    expect(logs()).toContain("server.spoolDir changed; the server keeps using the old folder until it is restarted");
  });

  test("TLS warnings are logged at start and on SIGHUP", async () => {
    const certs = path.join(dir, "certs");
    await mkdir(certs);
    const expiredDates = daysFromNow(-60, -1);
    const expired = await makeCertificate(certs, "mx", "mx.cli.test", expiredDates);
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, tlsConfig("x@y.test"));
    const { logs } = await start(file);
    const warnings = () =>
      logs()
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((entry) => entry.level === 40);

    await expect.poll(() => warnings().map((entry) => entry.option), { timeout: 10_000 }).toContain("server.tls.cert");
    const atStart = warnings().find((entry) => entry.option === "server.tls.cert");
    expect(atStart).toMatchObject({
      file: expired.certPath,
      subject: "CN=mx.cli.test",
      validTo: certificateDate(expiredDates.notAfter),
    });
    expect(atStart!.msg).toContain(`certificate ${expired.certPath} (subject CN=mx.cli.test) expired on`);

    const before = warnings().length;
    const soonDates = daysFromNow(-1, 3);
    const soon = await makeCertificate(certs, "mx", "mx.cli.test", soonDates);
    await chmod(soon.keyPath, 0o644);
    child!.kill("SIGHUP");
    await expect.poll(() => logs(), { timeout: 10_000 }).toContain('"msg":"config reloaded"');
    const afterReload = warnings().slice(before);
    const certificate = afterReload.find((entry) => entry.option === "server.tls.cert");
    expect(certificate).toMatchObject({ file: soon.certPath, subject: "CN=mx.cli.test", validTo: certificateDate(soonDates.notAfter) });
    expect(certificate!.msg).toContain("less than 14 days from now");
    const key = afterReload.find((entry) => entry.option === "server.tls.key");
    expect(key).toMatchObject({ file: soon.keyPath, mode: "644" });
  });

  test("reload logs absolute config path", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config("x@y.test"));
    // A relative --config, resolved against the working folder.
    child = spawn(process.execPath, [BIN, "start", "--config", "mailroom.yaml"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout!.on("data", (chunk) => (output += chunk));
    child.stderr!.on("data", (chunk) => (output += chunk));
    const entries = () =>
      output
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { msg: string; file?: string });
    await expect.poll(() => entries().map((entry) => entry.msg), { timeout: 15_000 }).toContain("listening");

    child.kill("SIGHUP");
    await expect.poll(() => entries().map((entry) => entry.msg), { timeout: 10_000 }).toContain("config reloaded");
    const reloading = entries().find((entry) => entry.msg === "reloading config");
    const reloaded = entries().find((entry) => entry.msg === "config reloaded");
    expect(reloading?.file).toBe(file);
    expect(reloaded?.file).toBe(file);
  });

  test("log lines keep their order at exit", async () => {
    // The plugin keeps libuv's only pool thread busy, where pino's default
    // destination would write: at exit its last lines came out of order or not at all.
    const busy = `import { pbkdf2 } from "node:crypto";
import { definePlugin } from "@mailroom/core";
export default definePlugin({
  name: "busy",
  setup() {
    let running = true;
    const next = () => { if (running) pbkdf2("x", "y", 100_000, 32, "sha256", next); };
    return { start: next, close: () => { running = false; } };
  },
});
`;
    await writeFile(path.join(dir, "busy.mjs"), busy);
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, 'server:\n  listen: ["127.0.0.1:0"]\nplugins:\n  - use: ./busy.mjs\n');
    const logFile = path.join(dir, "server.log");
    const output = openSync(logFile, "w");
    child = spawn(process.execPath, [BIN, "start", "--config", file], {
      stdio: ["ignore", output, "pipe"],
      env: { ...process.env, UV_THREADPOOL_SIZE: "1" },
    });
    closeSync(output);
    const exit = exited(child);
    await expect.poll(() => readFile(logFile, "utf8"), { timeout: 15_000 }).toContain('"msg":"listening"');
    child.kill("SIGTERM");
    expect(await exit).toBe(0);

    const lines = (await readFile(logFile, "utf8")).split("\n").filter(Boolean);
    const messages = lines.map((line) => JSON.parse(line).msg);
    expect(messages).toEqual(["listening", "stopping", "server stopped"]);
  });

  describe("signals while the plugins start", () => {
    // Its start() runs until the test creates the file "go" beside the config.
    const SLOW_START = `
import { existsSync } from "node:fs";
import path from "node:path";
import { definePlugin, z } from "@mailroom/core";

export default definePlugin({
  name: "slow-start",
  options: z.object({ generation: z.number() }),
  setup({ options, logger, configDir }) {
    const generation = options.generation;
    return {
      async start() {
        logger.info({ generation }, "start began");
        while (!existsSync(path.join(configDir, "go"))) await new Promise((resolve) => setTimeout(resolve, 20));
        logger.info({ generation }, "start ended");
      },
      close: () => logger.info({ generation }, "closed"),
    };
  },
});
`;
    const slowConfig = (generation: number) =>
      `server:\n  listen: ["127.0.0.1:0"]\nplugins:\n  - use: ./slow-start.ts\n    with: { generation: ${generation} }\n`;

    /** Starts `mailroom start` and waits for the first start() to begin; returns its log lines so far, as objects. */
    async function startHeld(file: string) {
      await writeFile(path.join(dir, "slow-start.ts"), SLOW_START);
      await writeFile(file, slowConfig(1));
      const logFile = path.join(dir, "server.log");
      const output = openSync(logFile, "w");
      child = spawn(process.execPath, [BIN, "start", "--config", file], { stdio: ["ignore", output, "pipe"] });
      closeSync(output);
      const exit = exited(child);
      const lines = async () =>
        (await readFile(logFile, "utf8"))
          .split("\n")
          .filter(Boolean)
          .map((line) => JSON.parse(line) as { msg: string; generation?: number });
      await expect.poll(async () => (await lines()).map((line) => line.msg), { timeout: 15_000 }).toContain("start began");
      return { exit, lines };
    }

    const events = (lines: { msg: string; generation?: number }[]) =>
      lines.map((line) => (line.generation === undefined ? line.msg : `${line.msg} ${line.generation}`));

    test("SIGHUP reloads after the start in progress, and the new plugins start", async () => {
      const file = path.join(dir, "mailroom.yaml");
      const { exit, lines } = await startHeld(file);

      await writeFile(file, slowConfig(2));
      child!.kill("SIGHUP");
      await expect.poll(async () => events(await lines()), { timeout: 10_000 }).toContain("reloading config");
      await new Promise((resolve) => setTimeout(resolve, 300));
      await writeFile(path.join(dir, "go"), "");
      await expect.poll(async () => events(await lines()), { timeout: 10_000 }).toContain("config reloaded");

      child!.kill("SIGTERM");
      expect(await exit).toBe(0);
      expect(events(await lines()).filter((event) => !["listening", "reloading config"].includes(event))).toEqual([
        "start began 1",
        "start ended 1",
        "start began 2",
        "start ended 2",
        "closed 1",
        "config reloaded",
        "stopping",
        "closed 2",
        "server stopped",
      ]);
    });

    test("SIGTERM stops after the start in progress and exits 0 without listening", async () => {
      const file = path.join(dir, "mailroom.yaml");
      const { exit, lines } = await startHeld(file);

      child!.kill("SIGTERM");
      await expect.poll(async () => events(await lines()), { timeout: 10_000 }).toContain("stopping");
      await new Promise((resolve) => setTimeout(resolve, 200));
      await writeFile(path.join(dir, "go"), "");

      expect(await exit).toBe(0);
      const order = events(await lines());
      // listen() gives up while the plugins close, so its line may come before or after theirs.
      expect(order.filter((event) => event !== "listen did not finish because the server is stopping")).toEqual([
        "start began 1",
        "stopping",
        "start ended 1",
        "closed 1",
        "server stopped",
      ]);
      expect(order).toContain("listen did not finish because the server is stopping");
    });
  });

  test("invalid config exits with 1", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, "server:\n  listen: 25\n");
    const result = run(["start", "--config", file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${file}:2: server.listen`);
  });
});
