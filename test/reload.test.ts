import { mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { MailroomServer } from "@mailroom/core";
import { SmtpTestClient } from "@mailroom/testing";
import { pino } from "pino";
import { afterEach, beforeEach, expect, test } from "vitest";

// Answers MAIL with its own generation number and records close() in a file.
const PLUGIN = `
import { appendFileSync } from "node:fs";
import { definePlugin, ok, z } from "@mailroom/core";

export default definePlugin({
  name: "generation",
  options: z.object({ generation: z.number() }),
  setup({ options, configDir }) {
    return {
      mail: () => ok({ message: "generation " + options.generation }),
      close: () => appendFileSync(configDir + "/closed.log", options.generation + "\\n"),
    };
  },
});
`;

const config = (generation: number) => `server:
  listen: ["127.0.0.1:0"]
plugins:
  - use: ./generation.ts
    with: { generation: ${generation} }
`;

let dir: string;
let server: MailroomServer | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-reload-"));
  await writeFile(path.join(dir, "generation.ts"), PLUGIN);
});

afterEach(async () => {
  await server?.close();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function closedGenerations(): Promise<string[]> {
  const text = await readFile(path.join(dir, "closed.log"), "utf8").catch(() => "");
  return text.split("\n").filter(Boolean);
}

test("reload keeps open sessions on the old plugins", async () => {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, config(1));
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  const [address] = await server.listen();

  const old = await SmtpTestClient.connect(address!.port);
  await old.command("EHLO old.test");

  await writeFile(file, config(2));
  await server.reload();

  const fresh = await SmtpTestClient.connect(address!.port);
  await fresh.command("EHLO fresh.test");
  expect((await fresh.command("MAIL FROM:<a@b.test>")).lines[0]).toBe("2.1.0 generation 2");
  expect((await old.command("MAIL FROM:<a@b.test>")).lines[0]).toBe("2.1.0 generation 1");
  expect(await closedGenerations()).toEqual([]);

  await old.command("QUIT");
  await old.closed();
  await expect.poll(closedGenerations, { timeout: 5000 }).toEqual(["1"]);
  fresh.close();
});

test("invalid config on reload keeps the running plugins", async () => {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, config(1));
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  const [address] = await server.listen();

  await writeFile(file, config(1).replace("generation: 1", 'generation: "one"'));
  await expect(server.reload()).rejects.toThrow(/plugins\[0\]\.with\.generation/);

  const client = await SmtpTestClient.connect(address!.port);
  await client.command("EHLO client.test");
  expect((await client.command("MAIL FROM:<a@b.test>")).lines[0]).toBe("2.1.0 generation 1");
  client.close();
});

test("reload loads an edited plugin file", async () => {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, config(1));
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  const [address] = await server.listen();

  const edited = PLUGIN.replace('"generation " + options.generation', '"edited " + options.generation');
  await writeFile(path.join(dir, "generation.ts"), edited);
  const later = new Date(Date.now() + 5000);
  await utimes(path.join(dir, "generation.ts"), later, later);
  await server.reload();

  const client = await SmtpTestClient.connect(address!.port);
  await client.command("EHLO client.test");
  expect((await client.command("MAIL FROM:<a@b.test>")).lines[0]).toBe("2.1.0 edited 1");
  client.close();
});

test("unusable TLS key on reload changes nothing", async () => {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, config(1));
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  const [address] = await server.listen();

  await writeFile(path.join(dir, "bad.key"), "not a key\n");
  await writeFile(path.join(dir, "bad.crt"), "not a certificate\n");
  await writeFile(file, `${config(2)}\n`.replace("server:\n", "server:\n  tls: { key: ./bad.key, cert: ./bad.crt }\n"));
  const failure = server.reload();
  await expect(failure).rejects.toThrow(/server\.tls\.key: .*bad\.key is not a PEM private key/);

  const client = await SmtpTestClient.connect(address!.port);
  const ehlo = await client.command("EHLO client.test");
  expect(ehlo.lines.some((line) => line.startsWith("STARTTLS"))).toBe(false);
  expect((await client.command("MAIL FROM:<a@b.test>")).lines[0]).toBe("2.1.0 generation 1");
  client.close();
  // The second generation never started, so nothing was closed.
  expect(await closedGenerations()).toEqual([]);
});

test("changed listen address on reload is logged", async () => {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, config(1));
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  server = await MailroomServer.fromFile(file, { logger });
  await server.listen();

  await writeFile(file, config(1).replace('["127.0.0.1:0"]', '["127.0.0.1:0", "127.0.0.1:2626"]'));
  await server.reload();

  const warning = lines.find((line) => line.msg === "server.listen changed; the server keeps its listeners until it is restarted");
  expect(warning).toBeDefined();
  expect(warning!.configured).toEqual(["127.0.0.1:0", "127.0.0.1:2626"]);
  expect(warning!.listening).toEqual(["127.0.0.1:0"]);
});

test("changed metrics and workers on reload are logged", async () => {
  const file = path.join(dir, "mailroom.yaml");
  const withMetrics = config(1).replace("server:\n", "server:\n  metrics: { listen: 127.0.0.1:0 }\n");
  await writeFile(file, withMetrics);
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  server = await MailroomServer.fromFile(file, { logger });
  await server.listen();
  const metrics = server.metricsAddress!;

  await writeFile(file, config(1).replace("server:\n", "server:\n  workers: 2\n"));
  await server.reload();

  const metricsWarning = lines.find((line) => line.msg === "server.metrics changed; the metrics endpoint keeps its address until the server is restarted");
  expect(metricsWarning).toBeDefined();
  expect(metricsWarning!.serving).toBe("127.0.0.1:0");
  expect(metricsWarning!.configured).toBe("(none)");
  const workersWarning = lines.find((line) => line.msg === "server.workers changed; the number of worker processes changes only at a restart");
  expect(workersWarning).toBeDefined();
  expect(workersWarning!.running).toBe(1);
  expect(workersWarning!.configured).toBe(2);
  // The endpoint keeps serving on its first address after the reload.
  const response = await fetch(`http://${metrics.host}:${metrics.port}/metrics`);
  expect(response.status).toBe(200);
  await response.body?.cancel();

  lines.length = 0;
  await server.reload();
  expect(lines.filter((line) => line.level === 40)).toHaveLength(2);
});

test("unchanged metrics on reload logs no warning", async () => {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, config(1).replace("server:\n", "server:\n  metrics: { listen: 127.0.0.1:0 }\n"));
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  server = await MailroomServer.fromFile(file, { logger });
  await server.listen();
  await server.reload();
  expect(lines.filter((line) => line.level === 40)).toEqual([]);
});
