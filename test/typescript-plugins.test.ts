import { spawnSync, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { SmtpTestClient } from "@mailroom/testing";
import { afterEach, beforeEach, expect, test } from "vitest";
import { startCli } from "./fault-kit.js";

// These tests run the built CLI, which compiles TypeScript plugins with
// esbuild; under vitest the engine imports .ts files directly instead.
const BIN = fileURLToPath(new URL("../packages/cli/bin/mailroom.js", import.meta.url));

// A plugin in a folder without package.json that imports a local TypeScript
// module, a package installed beside it, a built-in and the engine, and
// reads a file next to itself through import.meta.url.
const PLUGIN = `
import { readFileSync } from "node:fs";
import { definePlugin, deny, z } from "@mailroom/core";
import shout from "shout";
import { refusal } from "./lib/refusal.ts";

const listed = readFileSync(new URL("./listed.txt", import.meta.url), "utf8").trim();
// The words import.meta.url inside a string stay as they are.
const note: string = "found through import.meta.url";
export const resolved = import.meta.resolve("./listed.txt");

export default definePlugin({
  name: "typed",
  options: z.object({}),
  setup() {
    return {
      mail: ({ address }) => {
        if (address?.address === "boom@sender.test") throw new Error("planned failure");
        if (address?.address === "where@sender.test") return deny({ code: 550, enhanced: "5.7.1", message: note + " " + resolved });
        return address?.address === listed ? deny({ code: 550, enhanced: "5.7.1", message: shout(refusal) }) : undefined;
      },
    };
  },
});
`;

const CONFIG = `server:
  hostname: mx.ts.test
  listen: ["127.0.0.1:0"]
  logLevel: info
  shutdownTimeout: 2s
plugins:
  - use: ./plugin.ts
`;

let dir: string;
let child: ChildProcess | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-ts-"));
  await mkdir(path.join(dir, "lib"));
  await mkdir(path.join(dir, "node_modules/shout"), { recursive: true });
  await writeFile(path.join(dir, "plugin.ts"), PLUGIN);
  await writeFile(path.join(dir, "lib/refusal.ts"), `export const refusal: string = "listed sender";\n`);
  await writeFile(path.join(dir, "listed.txt"), "bad@sender.test\n");
  await writeFile(path.join(dir, "node_modules/shout/package.json"), JSON.stringify({ name: "shout", main: "index.js" }));
  await writeFile(path.join(dir, "node_modules/shout/index.js"), "module.exports = (text) => text.toUpperCase();\n");
  await writeFile(path.join(dir, "mailroom.yaml"), CONFIG);
});

afterEach(async () => {
  child?.kill("SIGKILL");
  child = undefined;
  await rm(dir, { recursive: true, force: true });
});

/** Starts `mailroom start` from another folder, so no path in the output depends on the current one. */
async function start(): Promise<{ port: number; logs: () => string }> {
  const server = await startCli(path.join(dir, "mailroom.yaml"), 15_000, os.tmpdir());
  child = server.child;
  return server;
}

async function mailReply(port: number, sender: string): Promise<string> {
  const client = await SmtpTestClient.connect(port);
  try {
    await client.command("EHLO client.test");
    const reply = await client.command(`MAIL FROM:<${sender}>`);
    return `${reply.code} ${reply.lines.join(" ")}`;
  } finally {
    client.close();
  }
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test("plugin with local, package and engine imports", async () => {
  const { port } = await start();
  expect(await mailReply(port, "bad@sender.test")).toBe("550 5.7.1 LISTED SENDER");
  expect(await mailReply(port, "good@sender.test")).toMatch(/^250 /);
});

test("import.meta inside strings and resolve from the source", async () => {
  const { port } = await start();
  const listed = pathToFileURL(path.join(dir, "listed.txt")).href;
  expect(await mailReply(port, "where@sender.test")).toBe(`550 5.7.1 found through import.meta.url ${listed}`);
});

test("hook failure stack names the TypeScript file", async () => {
  const { port, logs } = await start();
  expect(await mailReply(port, "boom@sender.test")).toMatch(/^451 /);
  await waitFor(() => logs().includes("planned failure"), "the hook failure in the log");
  const line = logs().split("\n").find((text) => text.includes("planned failure"))!;
  const stack: string = JSON.parse(line).err.stack;
  const throwLine = PLUGIN.split("\n").findIndex((text) => text.includes("planned failure")) + 1;
  expect(stack).toContain(`${path.join(dir, "plugin.ts")}:${throwLine}:`);
  expect(stack).not.toMatch(/mailroom-plugins-/);
});

test("reload compiles edits to imported modules", async () => {
  const { port, logs } = await start();
  expect(await mailReply(port, "bad@sender.test")).toBe("550 5.7.1 LISTED SENDER");
  await writeFile(path.join(dir, "lib/refusal.ts"), `export const refusal: string = "sender on the list";\n`);
  child!.kill("SIGHUP");
  await waitFor(() => logs().includes('"msg":"config reloaded"'), "the reload");
  expect(await mailReply(port, "bad@sender.test")).toBe("550 5.7.1 SENDER ON THE LIST");
});

test("compiled plugin files do not stay on disk", async () => {
  await start();
  const left = (await readdir(os.tmpdir())).filter((name) => name.startsWith(`mailroom-plugins-${child!.pid}-`));
  expect(left).toHaveLength(1);
  expect(await readdir(path.join(os.tmpdir(), left[0]!))).toEqual([]);
  const exit = new Promise((resolve) => child!.once("exit", resolve));
  child!.kill("SIGTERM");
  await exit;
  const after = (await readdir(os.tmpdir())).filter((name) => name.startsWith(`mailroom-plugins-${child!.pid}-`));
  expect(after).toEqual([]);
});

test("syntax error names file, line and column", async () => {
  await writeFile(path.join(dir, "lib/refusal.ts"), `export const refusal: string = ;\n`);
  const result = spawnSync(process.execPath, [BIN, "check", "--config", path.join(dir, "mailroom.yaml")], {
    encoding: "utf8",
    timeout: 20_000,
  });
  expect(result.status).toBe(1);
  expect(result.stderr).toContain('cannot load plugin "./plugin.ts": TypeScript compilation failed');
  expect(result.stderr).toMatch(/lib\/refusal\.ts:1:\d+: /);
});

// The same rules hold for a JavaScript plugin written as an ES module: it
// imports the engine from a folder outside the repository, and a reload
// picks up edits to the modules it imports.
const JS_PLUGIN = `
import { definePlugin, deny } from "@mailroom/core";
import { refusal } from "./lib/refusal.mjs";

export default definePlugin({
  name: "plain",
  setup() {
    return {
      mail: ({ address }) => (address?.address === "bad@sender.test" ? deny({ code: 550, enhanced: "5.7.1", message: refusal }) : undefined),
    };
  },
});
`;

async function useJavaScriptPlugin(): Promise<void> {
  await writeFile(path.join(dir, "plugin.mjs"), JS_PLUGIN);
  await writeFile(path.join(dir, "lib/refusal.mjs"), `export const refusal = "listed sender";\n`);
  await writeFile(path.join(dir, "mailroom.yaml"), CONFIG.replace("./plugin.ts", "./plugin.mjs"));
}

test("JavaScript module plugin imports the engine", async () => {
  await useJavaScriptPlugin();
  const { port } = await start();
  expect(await mailReply(port, "bad@sender.test")).toBe("550 5.7.1 listed sender");
  expect(await mailReply(port, "good@sender.test")).toMatch(/^250 /);
});

test("reload picks up a JavaScript plugin's imports", async () => {
  await useJavaScriptPlugin();
  const { port, logs } = await start();
  await writeFile(path.join(dir, "lib/refusal.mjs"), `export const refusal = "sender on the list";\n`);
  child!.kill("SIGHUP");
  await waitFor(() => logs().includes('"msg":"config reloaded"'), "the reload");
  expect(await mailReply(port, "bad@sender.test")).toBe("550 5.7.1 sender on the list");
});

test("missing package names where it was looked for", async () => {
  await writeFile(path.join(dir, "mailroom.yaml"), CONFIG.replace("./plugin.ts", "mailroom-plugin-nowhere"));
  const result = spawnSync(process.execPath, [BIN, "check", "--config", path.join(dir, "mailroom.yaml")], {
    encoding: "utf8",
    timeout: 20_000,
  });
  expect(result.status).toBe(1);
  expect(result.stderr).toContain(`cannot load plugin "mailroom-plugin-nowhere": package not found in ${dir} or beside @mailroom/core`);
  expect(result.stderr).not.toContain("noop.js");
});

/** Writes a package into node_modules beside the config, and returns its folder. */
async function installBeside(name: string, manifest: Record<string, unknown>, files: Record<string, string>): Promise<string> {
  const folder = path.join(dir, "node_modules", name);
  await mkdir(folder, { recursive: true });
  await writeFile(path.join(folder, "package.json"), JSON.stringify({ name, version: "1.0.0", type: "module", ...manifest }));
  for (const [file, text] of Object.entries(files)) await writeFile(path.join(folder, file), text);
  return folder;
}

/** Runs `mailroom check` on a config that loads the package `use`. */
async function checkPackage(use: string) {
  await writeFile(path.join(dir, "mailroom.yaml"), CONFIG.replace("./plugin.ts", use));
  return spawnSync(process.execPath, [BIN, "check", "--config", path.join(dir, "mailroom.yaml")], {
    encoding: "utf8",
    timeout: 20_000,
  });
}

test("unbuilt package names its entry file", async () => {
  const folder = await installBeside(
    "acme-unbuilt",
    { exports: { ".": { types: "./dist/index.d.ts", default: "./dist/index.js" } }, scripts: { build: "tsc -p ." } },
    {},
  );
  const result = await checkPackage("acme-unbuilt");
  expect(result.status).toBe(1);
  expect(result.stderr).toContain(
    `cannot load plugin "acme-unbuilt": package acme-unbuilt is installed in ${folder} but its entry file ${folder}/dist/index.js does not exist; build it (npm run build in ${folder})`,
  );
});

test("package without its main file says to reinstall it", async () => {
  const folder = await installBeside("acme-partial", { main: "./lib/main.js" }, {});
  const result = await checkPackage("acme-partial");
  expect(result.status).toBe(1);
  expect(result.stderr).toContain(
    `package acme-partial is installed in ${folder} but its entry file ${folder}/lib/main.js does not exist; reinstall it (npm install acme-partial)`,
  );
});

test("package's missing dependency is named", async () => {
  const folder = await installBeside("acme-deps", { main: "index.js" }, { "index.js": 'import "left-pad-nowhere";\nexport default {};\n' });
  const result = await checkPackage("acme-deps");
  expect(result.status).toBe(1);
  expect(result.stderr).toContain(
    `cannot load plugin "acme-deps": package acme-deps in ${folder} imports a module that was not found: Cannot find package 'left-pad-nowhere' imported from ${folder}/index.js; add left-pad-nowhere to the dependencies of acme-deps and install it`,
  );
  expect(result.stderr).not.toContain("package not found");
});

test("package's missing module file is named", async () => {
  const folder = await installBeside("acme-files", { main: "index.js" }, { "index.js": 'import "./helper.js";\nexport default {};\n' });
  const result = await checkPackage("acme-files");
  expect(result.status).toBe(1);
  expect(result.stderr).toContain(
    `package acme-files in ${folder} imports a module that was not found: Cannot find module '${folder}/helper.js' imported from ${folder}/index.js\n`,
  );
});
