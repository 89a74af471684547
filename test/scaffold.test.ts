import { spawnSync } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
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

test("new plugin creates a package whose test passes", async () => {
  const name = `zz-scaffold-${process.pid}`;
  const folder = path.join(ROOT, "plugins", name);
  created.push(folder);

  const result = mailroom(["new", "plugin", name]);
  expect(result.status).toBe(0);
  const manifest = JSON.parse(await readFile(path.join(folder, "package.json"), "utf8"));
  expect(manifest.name).toBe(name);
  expect(manifest.peerDependencies["@mailroom/core"]).toBeDefined();
  expect(await readFile(path.join(folder, "README.md"), "utf8")).toContain(`use: "${name}"`);

  const run = vitest(path.join(folder, "src/index.test.ts"));
  expect(run.stdout + run.stderr).toMatch(/3 passed/);
  expect(run.status).toBe(0);
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
