import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, expect, test } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = path.join(ROOT, "packages/cli/bin/mailroom.js");
const created: string[] = [];

afterEach(async () => {
  for (const folder of created.splice(0)) await rm(folder, { recursive: true, force: true });
});

function mailroom(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: "utf8", timeout: 20_000 });
}

/** Runs the generated test with the repository's vitest config, as a user would. */
function vitest(file: string) {
  return spawnSync("npx", ["vitest", "run", path.relative(ROOT, file)], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
}

test("new plugin creates a package whose test passes", { timeout: 120_000 }, async () => {
  const name = `zz-scaffold-${process.pid}`;
  const folder = path.join(ROOT, "plugins", name);
  created.push(folder);

  const result = mailroom(["new", "plugin", name]);
  expect(result.status).toBe(0);
  const manifest = JSON.parse(await readFile(path.join(folder, "package.json"), "utf8"));
  expect(manifest.name).toBe(name);
  expect(manifest.peerDependencies["@mailroom/core"]).toBeDefined();
  const readme = await readFile(path.join(folder, "README.md"), "utf8");
  expect(readme).toContain(`use: "${name}"`);
  expect(readme).toContain(`npx vitest run plugins/${name}`);

  const run = vitest(path.join(folder, "src/index.test.ts"));
  expect(run.stdout + run.stderr).toMatch(/3 passed/);
  expect(run.status).toBe(0);
});

test("package test commands run in its folder", { timeout: 120_000 }, async () => {
  const name = `zz-scaffold-own-${process.pid}`;
  const folder = path.join(ROOT, "plugins", name);
  created.push(folder);
  expect(mailroom(["new", "plugin", name]).status).toBe(0);

  // The package README's command, and the package.json test script.
  for (const [command, args] of [
    ["npm", ["test"]],
    ["npx", ["vitest", "run"]],
  ] as const) {
    const run = spawnSync(command, args, { cwd: folder, encoding: "utf8", timeout: 60_000 });
    expect(run.stdout + run.stderr, `${command} ${args.join(" ")}`).toMatch(/3 passed/);
    expect(run.status, `${command} ${args.join(" ")}`).toBe(0);
  }
});

test("new package output asks for a root npm install", () => {
  const name = `zz-scaffold-install-${process.pid}`;
  created.push(path.join(ROOT, "plugins", name));
  const result = mailroom(["new", "plugin", name]);
  expect(result.status).toBe(0);
  expect(result.stderr).toContain(`run "npm install" in ${ROOT.replace(/\/$/, "")} before the server can load use: "${name}"`);
});

test("package outside the workspaces says how to add it", () => {
  const dir = path.join(ROOT, "examples", `zz-scaffold-nested-${process.pid}`);
  created.push(dir);
  const result = mailroom(["new", "plugin", "nested", "--dir", dir]);
  expect(result.status).toBe(0);
  const relative = path.relative(ROOT, path.join(dir, "nested"));
  expect(result.stderr).toContain(`${relative} is not in the workspaces of ${path.join(ROOT, "package.json")}`);
});

test("package outside any workspace says to install it", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-scaffold-"));
  created.push(dir);
  const result = mailroom(["new", "plugin", "loose", "--dir", dir]);
  expect(result.status).toBe(0);
  expect(result.stderr).toContain(`${path.join(dir, "loose")} is not in an npm workspace; install it where the server runs`);
});

test("new plugin --local writes one file and its test", async () => {
  const dir = path.join(ROOT, "examples", `zz-scaffold-${process.pid}`);
  created.push(dir);

  const result = mailroom(["new", "plugin", "tagger", "--local", "--dir", dir]);
  expect(result.status).toBe(0);
  expect(result.stdout).toContain(path.join(dir, "tagger.ts"));

  const run = vitest(path.join(dir, "tagger.test.ts"));
  expect(run.stdout + run.stderr).toMatch(/3 passed/);
  expect(run.status).toBe(0);
});

test("new plugin refuses to overwrite", async () => {
  const dir = path.join(ROOT, "examples", `zz-scaffold-again-${process.pid}`);
  created.push(dir);
  expect(mailroom(["new", "plugin", "twice", "--local", "--dir", dir]).status).toBe(0);
  const again = mailroom(["new", "plugin", "twice", "--local", "--dir", dir]);
  expect(again.status).toBe(1);
  expect(again.stderr).toMatch(/already exists/);
});

test("new plugin rejects an invalid name", () => {
  const result = mailroom(["new", "plugin", "Bad Name"]);
  expect(result.status).toBe(2);
  expect(result.stderr).toMatch(/invalid plugin name/);
});
