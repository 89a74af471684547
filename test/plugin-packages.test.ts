import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SmtpTestClient } from "@mailroom/testing";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { killHard, startCli, type CliServer } from "./fault-kit.js";

// The built CLI loads plugin packages from a node_modules folder beside the
// config file, outside the repository, as an ES module import from the
// config's folder would.
const BIN = fileURLToPath(new URL("../packages/cli/bin/mailroom.js", import.meta.url));

/**
 * Returns the source of a plugin that rejects MAIL from `<variant>@sender.test`
 * with a reply naming the variant. It imports nothing from @mailroom/core,
 * which does not resolve from a temporary folder, because a plugin is an
 * object with a name and a setup, and a hook result an object with a verdict.
 */
function pluginSource(variant: string, moduleSystem: "esm" | "cjs"): string {
  const plugin = `{
  name: "${variant}",
  setup() {
    return {
      mail: ({ address }) =>
        address?.address === "${variant}@sender.test"
          ? { verdict: "DENY", code: 550, enhanced: "5.7.1", message: "rejected by ${variant}" }
          : undefined,
    };
  },
}`;
  return moduleSystem === "esm" ? `export default ${plugin};\n` : `module.exports = ${plugin};\n`;
}

/** Writes a package into `dir`/node_modules and returns its folder. */
async function install(dir: string, name: string, manifest: Record<string, unknown>, files: Record<string, string>): Promise<string> {
  const folder = path.join(dir, "node_modules", name);
  await mkdir(folder, { recursive: true });
  await writeFile(path.join(folder, "package.json"), JSON.stringify({ name, version: "1.0.0", ...manifest }));
  for (const [file, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(folder, file)), { recursive: true });
    await writeFile(path.join(folder, file), text);
  }
  return folder;
}

function config(uses: string[]): string {
  return `server:
  hostname: mx.packages.test
  listen: ["127.0.0.1:0"]
  shutdownTimeout: 1s
plugins:
${uses.map((use) => `  - use: "${use}"`).join("\n")}
`;
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

describe("package layouts in a real server", () => {
  let dir: string;
  let server: CliServer | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-packages-"));
    // exports with the import condition alone, the layout of an ES module-only package.
    await install(dir, "acme-import-only", { type: "module", exports: { import: "./lib/plugin.js" } }, {
      "lib/plugin.js": pluginSource("import-only", "esm"),
    });
    // Conditions under ".": the import target must win over require.
    await install(
      dir,
      "acme-dual",
      {
        exports: {
          ".": { types: "./index.d.ts", require: "./cjs/plugin.cjs", import: "./esm/plugin.mjs" },
          "./package.json": "./package.json",
        },
      },
      { "cjs/plugin.cjs": pluginSource("dual-require", "cjs"), "esm/plugin.mjs": pluginSource("dual-import", "esm") },
    );
    // A subpath pattern in exports, reached with a subpath specifier, in a scoped package.
    await install(dir, "@acme/rules", { type: "module", exports: { "./rules/*": { node: "./src/rules/*.js" } } }, {
      "src/rules/strict.js": pluginSource("scoped-subpath", "esm"),
    });
    // No exports: main names the entry file.
    await install(dir, "acme-main-only", { type: "module", main: "./dist/entry.js" }, { "dist/entry.js": pluginSource("main-only", "esm") });
    // A CommonJS package: no type, main, module.exports.
    await install(dir, "acme-commonjs", { main: "index.js" }, { "index.js": pluginSource("commonjs", "cjs") });
    // A CommonJS package whose exports has require and default conditions.
    await install(dir, "acme-commonjs-exports", { exports: { require: "./main.js", default: "./main.js" } }, {
      "main.js": pluginSource("commonjs-exports", "cjs"),
    });
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(
      file,
      config(["acme-import-only", "acme-dual", "@acme/rules/rules/strict", "acme-main-only", "acme-commonjs", "acme-commonjs-exports"]),
    );
    server = await startCli(file, 15_000, os.tmpdir());
  });

  afterAll(async () => {
    if (server) await killHard(server);
    await rm(dir, { recursive: true, force: true });
  });

  test.each(["import-only", "dual-import", "scoped-subpath", "main-only", "commonjs", "commonjs-exports"])("%s package runs", async (variant) => {
    expect(await mailReply(server!.port, `${variant}@sender.test`)).toBe(`550 5.7.1 rejected by ${variant}`);
  });

  test("require target of dual package unused", async () => {
    expect(await mailReply(server!.port, "dual-require@sender.test")).toMatch(/^250 /);
  });
});

describe("package errors in mailroom check", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-package-errors-"));
  });

  afterEach(async () => {
    await rm(path.join(dir, "node_modules"), { recursive: true, force: true });
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function check(use: string) {
    await writeFile(path.join(dir, "mailroom.yaml"), config([use]));
    return spawnSync(process.execPath, [BIN, "check", "--config", path.join(dir, "mailroom.yaml")], {
      cwd: os.tmpdir(),
      encoding: "utf8",
      timeout: 20_000,
    });
  }

  test("import-only package loads in check", async () => {
    await install(dir, "acme-import-only", { type: "module", exports: { import: "./lib/plugin.js" } }, {
      "lib/plugin.js": pluginSource("import-only", "esm"),
    });
    const result = await check("acme-import-only");
    expect(result.stderr).toBe("");
    expect(result.stdout).toContain("1. import-only: mail");
    expect(result.status).toBe(0);
  });

  test("package not installed", async () => {
    const result = await check("acme-absent");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(
      `cannot load plugin "acme-absent": package not found in ${dir} or beside @mailroom/core; install it there (npm install acme-absent) or give a path that starts with ./`,
    );
  });

  test("scoped subpath of package not installed", async () => {
    const result = await check("@acme/absent/rules/strict");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("package not found");
    expect(result.stderr).toContain("(npm install @acme/absent)");
  });

  test("import target missing names the file", async () => {
    const folder = await install(dir, "acme-unbuilt", { type: "module", exports: { import: "./dist/index.js" }, scripts: { build: "tsc" } }, {});
    const result = await check("acme-unbuilt");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(
      `cannot load plugin "acme-unbuilt": package acme-unbuilt is installed in ${folder} but its entry file ${folder}/dist/index.js does not exist; build it (npm run build in ${folder})`,
    );
  });

  test("subpath pattern target missing names the file", async () => {
    const folder = await install(dir, "acme-patterns", { type: "module", exports: { "./rules/*": "./src/rules/*.js" } }, {});
    const result = await check("acme-patterns/rules/lax");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(
      `package acme-patterns is installed in ${folder} but its entry file ${folder}/src/rules/lax.js does not exist; reinstall it (npm install acme-patterns)`,
    );
  });

  test("main and index.js both missing", async () => {
    const folder = await install(dir, "acme-empty", { type: "module" }, {});
    const result = await check("acme-empty");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`package acme-empty is installed in ${folder} but its entry file ${folder}/index.js does not exist`);
  });

  test("import-only package's missing dependency", async () => {
    const folder = await install(dir, "acme-deps", { type: "module", exports: { import: "./index.js" } }, {
      "index.js": 'import "left-pad-nowhere";\nexport default {};\n',
    });
    const result = await check("acme-deps");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(
      `cannot load plugin "acme-deps": package acme-deps in ${folder} imports a module that was not found: Cannot find package 'left-pad-nowhere' imported from ${folder}/index.js; add left-pad-nowhere to the dependencies of acme-deps and install it`,
    );
  });

  test("require-only exports names the conditions", async () => {
    const folder = await install(dir, "acme-require-only", { exports: { require: "./index.js" } }, { "index.js": pluginSource("require-only", "cjs") });
    const result = await check("acme-require-only");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`cannot load plugin "acme-require-only": No "exports" main defined in ${folder}/package.json`);
    expect(result.stderr).toContain('"exports" needs an entry with the condition "import", "node" or "default"');
  });

  test("unexported subpath names the conditions", async () => {
    await install(dir, "acme-closed", { type: "module", exports: { ".": "./index.js" } }, { "index.js": pluginSource("closed", "esm") });
    const result = await check("acme-closed/internal");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`Package subpath './internal' is not defined by "exports"`);
    expect(result.stderr).toContain('"exports" needs an entry with the condition "import", "node" or "default"');
  });

  test("invalid package.json is reported", async () => {
    const folder = path.join(dir, "node_modules", "acme-broken");
    await mkdir(folder, { recursive: true });
    await writeFile(path.join(folder, "package.json"), "{ not json");
    const result = await check("acme-broken");
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`cannot load plugin "acme-broken": Invalid package config ${folder}/package.json`);
  });
});
