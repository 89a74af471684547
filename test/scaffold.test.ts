import { spawnSync } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SmtpTestClient } from "@mailroom/testing";
import { afterAll, afterEach, beforeAll, expect, test } from "vitest";
import { killHard, startCli, type CliServer } from "./fault-kit.js";

const CHECKOUT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");

// Folders of the checkout that the copy leaves out: git's data, and the
// benchmark and coverage output with their own installs.
const NOT_COPIED = new Set([".git", "bench", "coverage", "examples/basic-server/var"]);

/**
 * Lists the files and folders of the checkout that git neither tracks nor
 * ignores, such as plugins a user scaffolded there. The copy leaves them out,
 * so that the tests count only the files they create.
 */
function untrackedPaths(): Set<string> {
  const listed = spawnSync("git", ["ls-files", "--others", "--exclude-standard", "--directory"], { cwd: CHECKOUT, encoding: "utf8" });
  if (listed.status !== 0) return new Set();
  return new Set(listed.stdout.split("\n").filter(Boolean).map((entry) => entry.replace(/\/$/, "")));
}

/**
 * Copies the checkout, as `npm ci` installed and built it, into a temporary
 * folder. The scaffold edits tsconfig.build.json and the tests run npm, so
 * they do that in the copy and leave the checkout under test as it is.
 */
async function copyCheckout(): Promise<string> {
  const untracked = untrackedPaths();
  const parent = await mkdtemp(path.join(os.tmpdir(), "mailroom-checkout-"));
  const root = path.join(parent, "mailroom");
  await cp(CHECKOUT, root, {
    recursive: true,
    preserveTimestamps: true,
    verbatimSymlinks: true,
    filter: (source) => {
      const relative = path.relative(CHECKOUT, source).split(path.sep).join("/");
      return !NOT_COPIED.has(relative) && !untracked.has(relative);
    },
  });
  return root;
}

let ROOT: string;
let BIN: string;
const created: string[] = [];
let server: CliServer | undefined;

beforeAll(async () => {
  ROOT = await copyCheckout();
  BIN = path.join(ROOT, "packages/cli/bin/mailroom.js");
}, 120_000);

afterAll(async () => {
  if (ROOT) await rm(path.dirname(ROOT), { recursive: true, force: true });
});

afterEach(async () => {
  if (server) await killHard(server);
  server = undefined;
  for (const folder of created.splice(0)) await rm(folder, { recursive: true, force: true });
});

function mailroom(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: "utf8", timeout: 20_000 });
}

/** Runs npm in `cwd` without the network: the copy's node_modules already has every package. */
function npm(args: string[], cwd = ROOT) {
  return spawnSync("npm", [...args, "--offline", "--no-audit", "--no-fund"], { cwd, encoding: "utf8", timeout: 180_000 });
}

/** Runs the generated test with the repository's vitest config, as a user would. */
function vitest(file: string) {
  return spawnSync("npx", ["vitest", "run", path.relative(ROOT, file)], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
}

/** Writes a config outside the checkout that loads the package `name`, and returns its path. */
async function configFor(name: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-scaffold-config-"));
  created.push(dir);
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(
    file,
    `server:\n  listen: ["127.0.0.1:0"]\n  shutdownTimeout: 2s\nplugins:\n  - use: "${name}"\n    with: { blockedDomains: [spam.example] }\n`,
  );
  return file;
}

// Packages scaffolded into the copy stay there until the end: the copy's
// tsconfig.build.json lists them, so every later `npm install` builds them.

test("package loads after the documented npm install", { timeout: 240_000 }, async () => {
  const name = "acme-policy";
  const scaffold = mailroom(["new", "plugin", name]);
  expect(scaffold.status, scaffold.stderr).toBe(0);
  expect(scaffold.stderr).toContain(`run "npm install" in ${ROOT} before the server can load use: "${name}"`);
  const project = JSON.parse(await readFile(path.join(ROOT, "tsconfig.build.json"), "utf8"));
  expect(project.references).toContainEqual({ path: `plugins/${name}` });

  const install = npm(["install"]);
  expect(install.status, install.stderr).toBe(0);

  server = await startCli(await configFor(name), 20_000, ROOT, BIN);
  const client = await SmtpTestClient.connect(server.port);
  await client.command("EHLO client.test");
  const blocked = await client.command("MAIL FROM:<someone@spam.example>");
  expect(blocked.code).toBe(550);
  expect(blocked.enhanced).toBe("5.7.1");
  expect((await client.command("MAIL FROM:<someone@mail.example>")).code).toBe(250);
  client.close();
});

test("unbuilt package names its missing entry file", { timeout: 240_000 }, async () => {
  const name = "acme-unbuilt";
  const folder = path.join(ROOT, "plugins", name);
  expect(mailroom(["new", "plugin", name]).status).toBe(0);
  const config = await configFor(name);

  const notLinked = mailroom(["check", "--config", config]);
  expect(notLinked.status).toBe(1);
  expect(notLinked.stderr).toContain(`cannot load plugin "${name}": package not found in ${path.dirname(config)} or beside @mailroom/core`);

  // Linked into node_modules, but the root prepare script that builds it did not run.
  const link = npm(["install", "--ignore-scripts"]);
  expect(link.status, link.stderr).toBe(0);
  const unbuilt = mailroom(["check", "--config", config]);
  expect(unbuilt.status).toBe(1);
  expect(unbuilt.stderr).toContain(
    `cannot load plugin "${name}": package ${name} is installed in ${folder} but its entry file ${folder}/dist/index.js does not exist; build it (npm run build in ${ROOT})`,
  );

  // The advice works, and a deleted dist/ is built again, because the build record is inside it.
  const build = npm(["run", "build"], ROOT);
  expect(build.status, build.stderr).toBe(0);
  await rm(path.join(folder, "dist"), { recursive: true, force: true });
  const rebuild = npm(["run", "build"], ROOT);
  expect(rebuild.status, rebuild.stderr).toBe(0);
  expect(build.status, build.stderr).toBe(0);
  const built = mailroom(["check", "--config", config]);
  expect(built.stderr).toBe("");
  expect(built.status).toBe(0);
  expect(built.stdout).toContain(`1. ${name}: mail`);
});

test("new plugin creates a package whose test passes", { timeout: 120_000 }, async () => {
  const name = "zz-scaffold";
  const folder = path.join(ROOT, "plugins", name);

  const result = mailroom(["new", "plugin", name]);
  expect(result.status).toBe(0);
  const manifest = JSON.parse(await readFile(path.join(folder, "package.json"), "utf8"));
  expect(manifest.name).toBe(name);
  expect(manifest.peerDependencies["@mailroom/core"]).toBeDefined();
  const readme = await readFile(path.join(folder, "README.md"), "utf8");
  expect(readme).toContain(`use: "${name}"`);
  expect(readme).toContain(`npx vitest run plugins/${name}`);
  expect(readme).toContain("`npm install` and `npm run build` at the repository root build it too");

  const run = vitest(path.join(folder, "src/index.test.ts"));
  expect(run.stdout + run.stderr).toMatch(/4 passed/);
  expect(run.status).toBe(0);
});

test("package test commands run in its folder", { timeout: 120_000 }, async () => {
  const name = "zz-scaffold-own";
  const folder = path.join(ROOT, "plugins", name);
  expect(mailroom(["new", "plugin", name]).status).toBe(0);

  // The package README's command, and the package.json test script.
  for (const [command, args] of [
    ["npm", ["test"]],
    ["npx", ["vitest", "run"]],
  ] as const) {
    const run = spawnSync(command, args, { cwd: folder, encoding: "utf8", timeout: 60_000 });
    expect(run.stdout + run.stderr, `${command} ${args.join(" ")}`).toMatch(/4 passed/);
    expect(run.status, `${command} ${args.join(" ")}`).toBe(0);
  }
});

test("second package keeps the project references", async () => {
  const before = JSON.parse(await readFile(path.join(ROOT, "tsconfig.build.json"), "utf8")).references;
  expect(mailroom(["new", "plugin", "zz-scaffold-second"]).status).toBe(0);
  const text = await readFile(path.join(ROOT, "tsconfig.build.json"), "utf8");
  expect(JSON.parse(text).references).toEqual([...before, { path: "plugins/zz-scaffold-second" }]);
  expect(text).toContain('    { "path": "plugins/zz-scaffold-second" }\n  ]\n}\n');
  const tsconfig = JSON.parse(await readFile(path.join(ROOT, "plugins/zz-scaffold-second/tsconfig.json"), "utf8"));
  expect(tsconfig.compilerOptions.composite).toBe(true);
});

test("package outside the workspaces says how to add it", async () => {
  const dir = path.join(ROOT, "examples", "zz-scaffold-nested");
  created.push(dir);
  const before = await readFile(path.join(ROOT, "tsconfig.build.json"), "utf8");
  const result = mailroom(["new", "plugin", "nested", "--dir", dir]);
  expect(result.status).toBe(0);
  const relative = path.relative(ROOT, path.join(dir, "nested"));
  expect(result.stderr).toContain(
    `${relative} is not in the workspaces of ${path.join(ROOT, "package.json")}; add it there, run "npm install" in ${ROOT} and build it (npm run build -w nested)`,
  );
  expect(await readFile(path.join(ROOT, "tsconfig.build.json"), "utf8")).toBe(before);
});

/** An entry of package-lock.json's `packages` map. */
interface LockEntry {
  link?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/**
 * Writes a package-lock.json into `folder` that pins the registry packages
 * `names`, and everything they depend on, to the entries of the checkout's
 * lockfile. Without a lockfile, an offline `npm install` needs the registry
 * metadata of each package, which `npm ci` does not put in npm's cache. With
 * one, it needs only the tarballs, which the checkout's `npm ci` cached.
 */
async function writeLockFromCheckout(folder: string, names: string[]): Promise<void> {
  const checkoutLock = JSON.parse(await readFile(path.join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, LockEntry> };
  const entries = checkoutLock.packages;
  const picked: Record<string, LockEntry> = {};
  // Node's lookup from the package at `from`: its own node_modules, then each enclosing one.
  const locate = (name: string, from: string): string | undefined => {
    let base = from;
    for (;;) {
      const key = `${base ? `${base}/` : ""}node_modules/${name}`;
      if (entries[key] && !entries[key].link) return key;
      if (!base) return undefined;
      const cut = base.lastIndexOf("/node_modules/");
      base = cut < 0 ? "" : base.slice(0, cut);
    }
  };
  const pick = (key: string) => {
    if (picked[key]) return;
    const entry = entries[key]!;
    picked[key] = entry;
    for (const dependencies of [entry.dependencies, entry.optionalDependencies, entry.peerDependencies]) {
      for (const name of Object.keys(dependencies ?? {})) {
        const found = locate(name, key);
        if (found) pick(found);
      }
    }
  };
  for (const name of names) {
    const key = locate(name, "");
    if (!key) throw new Error(`${name} is not in the checkout's package-lock.json`);
    pick(key);
  }
  const manifest = JSON.parse(await readFile(path.join(folder, "package.json"), "utf8"));
  const root = { name: manifest.name, version: manifest.version, devDependencies: manifest.devDependencies, peerDependencies: manifest.peerDependencies };
  const lock = { name: manifest.name, version: manifest.version, lockfileVersion: 3, requires: true, packages: { "": root, ...picked } };
  await writeFile(path.join(folder, "package-lock.json"), `${JSON.stringify(lock, null, 2)}\n`);
}

test("outside package installs and loads", { timeout: 300_000 }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-scaffold-"));
  created.push(dir);
  const result = mailroom(["new", "plugin", "loose", "--dir", dir]);
  expect(result.status).toBe(0);
  const folder = path.join(dir, "loose");
  expect(result.stderr).toContain(
    `${folder} is not in an npm workspace; its devDependencies @mailroom/core and @mailroom/testing link to the packages of ${ROOT}, because the @mailroom packages are not on the npm registry. Build it (npm install, then npm run build, in ${folder}) and install it where the server runs (npm install ${folder})`,
  );
  const manifest = JSON.parse(await readFile(path.join(folder, "package.json"), "utf8"));
  expect(manifest.devDependencies["@mailroom/core"]).toBe(`file:${path.join(ROOT, "packages/core")}`);
  expect(manifest.devDependencies["@mailroom/testing"]).toBe(`file:${path.join(ROOT, "packages/testing")}`);
  expect(manifest.peerDependencies["@mailroom/core"]).toBe("^0.1.0");
  const tsconfig = JSON.parse(await readFile(path.join(folder, "tsconfig.json"), "utf8"));
  expect(tsconfig.compilerOptions.composite).toBeUndefined();

  // The printed steps, in order.
  await writeLockFromCheckout(folder, ["typescript", "vitest"]);
  const install = npm(["install"], folder);
  expect(install.status, install.stderr).toBe(0);
  const build = npm(["run", "build"], folder);
  expect(build.status, build.stderr).toBe(0);
  const run = shell("npm test", folder);
  expect(run.output).toMatch(/Tests\s+4 passed/);
  expect(run.status).toBe(0);

  const config = await configFor("loose");
  const serverInstall = npm(["install", folder], path.dirname(config));
  expect(serverInstall.status, serverInstall.stderr).toBe(0);
  const check = mailroom(["check", "--config", config]);
  expect(check.stderr).toBe("");
  expect(check.status).toBe(0);
  expect(check.stdout).toContain("1. loose: mail");
});

/** Returns the command of a "next step: run its test ..." line and the folder to run it in. */
function testStep(stderr: string): { command: string; cwd: string } {
  const match = /next step: run its test (?:in (\S+) )?with: (npx vitest run --dir .+)$/m.exec(stderr);
  expect(match, stderr).not.toBeNull();
  return { cwd: match![1] ?? ROOT, command: match![2]! };
}

/** Runs a printed command line as a user would type it, and returns its status and output without colours. */
function shell(command: string, cwd: string) {
  const run = spawnSync("sh", ["-c", command], { cwd, encoding: "utf8", timeout: 60_000 });
  return { status: run.status, output: (run.stdout + run.stderr).replace(/\u001b\[[0-9;]*m/g, "") };
}

test("local plugin test runs with the printed command", { timeout: 120_000 }, async () => {
  const name = "zz-local-greeter";
  const files = [path.join(ROOT, "plugins", `${name}.ts`), path.join(ROOT, "plugins", `${name}.test.ts`)];
  created.push(...files);

  const result = mailroom(["new", "plugin", name, "--local", "--dir", "plugins"]);
  expect(result.status, result.stderr).toBe(0);
  expect(result.stdout).toContain(files[0]);
  expect(result.stderr).toContain("mailroom: next step: run its test with: npx vitest run --dir plugins\n");

  const step = testStep(result.stderr);
  const run = shell(step.command, step.cwd);
  expect(run.output).toMatch(/Tests\s+4 passed/);
  expect(run.status).toBe(0);

  // The repository's own test run, as npm test starts it, leaves the file out.
  const listed = spawnSync("npx", ["vitest", "list", "--filesOnly"], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
  expect(listed.status, listed.stderr).toBe(0);
  expect(listed.stdout).toContain("test/scaffold.test.ts");
  expect(listed.stdout).not.toContain(`${name}.test.ts`);
});

test("local plugin outside the checkout prints where to test", { timeout: 120_000 }, async () => {
  const parent = await mkdtemp(path.join(os.tmpdir(), "mailroom local "));
  created.push(parent);
  const dir = path.join(parent, "plugins");

  // Run from the server's own folder, as an administrator would.
  const result = spawnSync(process.execPath, [BIN, "new", "plugin", "tagger", "--local", "--dir", "plugins"], {
    cwd: parent,
    encoding: "utf8",
    timeout: 20_000,
  });
  expect(result.status, result.stderr).toBe(0);
  expect(result.stderr).toContain(`mailroom: next step: run its test in ${ROOT} with: npx vitest run --dir '${dir}'\n`);

  const step = testStep(result.stderr);
  expect(step.cwd).toBe(ROOT);
  const run = shell(step.command, step.cwd);
  expect(run.output).toMatch(/Tests\s+4 passed/);
  expect(run.status).toBe(0);
});

test("local plugin in a subfolder names the checkout", async () => {
  const dir = path.join(ROOT, "examples", "zz-scaffold-local");
  created.push(dir);
  const result = spawnSync(process.execPath, [BIN, "new", "plugin", "tagger", "--local", "--dir", dir], {
    cwd: path.join(ROOT, "examples"),
    encoding: "utf8",
    timeout: 20_000,
  });
  expect(result.status, result.stderr).toBe(0);
  expect(result.stderr).toContain(`mailroom: next step: run its test in ${ROOT} with: npx vitest run --dir examples/zz-scaffold-local\n`);
});

test("new plugin refuses to overwrite", async () => {
  const dir = path.join(ROOT, "examples", "zz-scaffold-again");
  created.push(dir);
  expect(mailroom(["new", "plugin", "twice", "--local", "--dir", dir]).status).toBe(0);
  const again = mailroom(["new", "plugin", "twice", "--local", "--dir", dir]);
  expect(again.status).toBe(1);
  expect(again.stderr).toMatch(/already exists/);
});

test("package is private unless --public", { timeout: 120_000 }, async () => {
  expect(mailroom(["new", "plugin", "zz-private"]).status).toBe(0);
  expect(mailroom(["new", "plugin", "zz-public", "--public"]).status).toBe(0);
  const privateManifest = JSON.parse(await readFile(path.join(ROOT, "plugins/zz-private/package.json"), "utf8"));
  const publicManifest = JSON.parse(await readFile(path.join(ROOT, "plugins/zz-public/package.json"), "utf8"));
  expect(privateManifest.private).toBe(true);
  expect(publicManifest.private).toBeUndefined();

  // What `lerna publish` would publish.
  const listed = spawnSync("npx", ["lerna", "list", "--json"], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
  expect(listed.status, listed.stderr).toBe(0);
  const names = (JSON.parse(listed.stdout) as { name: string }[]).map((entry) => entry.name);
  expect(names).toContain("@mailroom/core");
  expect(names).toContain("zz-public");
  expect(names).not.toContain("zz-private");
});

test("--public with --local is a usage error", () => {
  const result = mailroom(["new", "plugin", "zz-local-public", "--local", "--public"]);
  expect(result.status).toBe(2);
  expect(result.stderr).toContain("--public applies to a plugin package, not to a --local plugin");
});

test("new plugin rejects an invalid name", () => {
  const result = mailroom(["new", "plugin", "Bad Name"]);
  expect(result.status).toBe(2);
  expect(result.stderr).toMatch(/invalid plugin name/);
});
