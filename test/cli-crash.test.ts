// Plugin bugs outside a hook call. A promise rejected without a handler is
// logged and the server runs on. An exception thrown from a timer is logged,
// and the server stops with exit code 1 so that a supervisor restarts it.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { SmtpTestClient } from "@mailroom/testing";
import { afterEach, expect, test } from "vitest";
import { killHard, startCli, type CliServer } from "./fault-kit.js";

// MAIL from "reject@" leaves a rejected promise, from "throw@" throws in a timer.
const BUGGY = `
import { definePlugin } from "@mailroom/core";

export default definePlugin({
  name: "buggy",
  setup() {
    return {
      mail({ address }) {
        if (address?.local === "reject") void Promise.reject(new Error("rejected by the buggy plugin"));
        if (address?.local === "throw") setTimeout(() => { throw new Error("thrown by the buggy plugin"); }, 10);
        return undefined;
      },
    };
  },
});
`;

let dir: string;
let server: CliServer | undefined;

afterEach(async () => {
  if (server) await killHard(server);
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function start(): Promise<CliServer> {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-crash-"));
  await writeFile(path.join(dir, "buggy.ts"), BUGGY);
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, `server:\n  listen: ["127.0.0.1:0"]\n  logLevel: info\nplugins:\n  - use: ./buggy.ts\n`);
  server = await startCli(file);
  return server;
}

async function mailFrom(port: number, sender: string): Promise<number> {
  const client = await SmtpTestClient.connect(port);
  await client.command("EHLO client.test");
  const reply = await client.command(`MAIL FROM:<${sender}>`);
  client.close();
  return reply.code;
}

function logLines(cli: CliServer): Record<string, unknown>[] {
  return cli
    .logs()
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

test("unhandled rejection is logged, server runs on", async () => {
  const cli = await start();
  expect(await mailFrom(cli.port, "reject@sender.test")).toBe(250);
  await expect.poll(() => logLines(cli).some((line) => String(line.msg).startsWith("unhandled promise rejection")), { timeout: 5000 }).toBe(true);
  const line = logLines(cli).find((entry) => String(entry.msg).startsWith("unhandled promise rejection"))!;
  expect(line.level).toBe(50);
  expect(JSON.stringify(line.err)).toContain("rejected by the buggy plugin");
  expect(await mailFrom(cli.port, "fine@sender.test")).toBe(250);
  expect(cli.child.exitCode).toBeNull();
});

test("uncaught exception stops with exit 1", async () => {
  const cli = await start();
  expect(await mailFrom(cli.port, "throw@sender.test")).toBe(250);
  expect(await cli.exited).toBe(1);
  const fatal = logLines(cli).find((entry) => entry.level === 60);
  expect(fatal?.msg).toBe("uncaught exception, probably a bug in a plugin; stopping the server");
  // The stack names the TypeScript source of the plugin.
  expect(String((fatal!.err as { stack?: string }).stack)).toContain("buggy.ts");
  expect(logLines(cli).some((entry) => entry.msg === "server stopped")).toBe(true);
});
