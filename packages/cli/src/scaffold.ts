import { mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { UsageError } from "./report.js";

/** Versions the generated package depends on: the ones this CLI was released with. */
const CORE_VERSION = "0.1.0";

function pluginSource(name: string, coreImport = "@mailroom/core"): string {
  return `import { definePlugin, deny, normalizeDomain, z } from "${coreImport}";

const domain = z.string().refine((text) => normalizeDomain(text) !== null, "expected a domain name");

/** Rejects senders whose domain is listed in \`blockedDomains\`. */
export default definePlugin({
  name: "${name}",
  options: z.object({
    blockedDomains: z.array(domain).default([]),
  }),
  setup({ options, logger }) {
    // As the engine spells address.domain: lower case, no trailing dot, international names as A-labels.
    const blocked = new Set(options.blockedDomains.map((listed) => normalizeDomain(listed)!));
    return {
      mail({ address }) {
        if (!address || !blocked.has(address.domain)) return undefined;
        logger.info({ sender: address.address }, "sender domain blocked");
        return deny({ code: 550, enhanced: "5.7.1", message: "Sender domain rejected" });
      },
    };
  },
});
`;
}

function testSource(importPath: string): string {
  return `import { testPlugin } from "@mailroom/testing";
import { expect, test } from "vitest";
import plugin from "${importPath}";

const harness = await testPlugin(plugin, { blockedDomains: ["spam.example", "bücher.example"] });

test.each([
  ["someone@spam.example", "DENY", 550],
  ["someone@xn--bcher-kva.example", "DENY", 550],
  ["someone@mail.example", "CONT", 250],
  ["", "CONT", 250],
])("sender %s", async (sender, verdict, code) => {
  const call = await harness.session().mail(sender);
  expect(call.verdict).toBe(verdict);
  expect(call.code).toBe(code);
});
`;
}

const VITEST_CONFIG = `import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// This package's own config, so that \`npm test\` in this folder does not use
// a parent folder's config, whose patterns are relative to that folder.
export default defineConfig({
  test: {
    root: fileURLToPath(new URL(".", import.meta.url)),
    include: ["src/**/*.test.ts"],
  },
});
`;

/**
 * Returns the package's README. `fromRoot` is its folder relative to the
 * workspace root, when it has one. `rootBuild` is true when `npm install`
 * at the workspace root builds the package too.
 */
function readme(name: string, local: boolean, fromRoot?: string, rootBuild = false): string {
  const use = local ? `./${name}.ts` : name;
  const rootRun = fromRoot
    ? `\nFrom the repository root, \`npx vitest run ${fromRoot}\` runs the same\ntests with the repository's config.\n`
    : "";
  const buildAtRoot = rootBuild
    ? "\n`npm install` and `npm run build` at the repository root build it too,\nwith the other packages."
    : "";
  return `# ${name}

A Mailroom plugin. It rejects senders whose domain is in \`blockedDomains\`.

## Use

\`\`\`yaml
plugins:
  - use: "${use}"
    with:
      blockedDomains: [spam.example]
\`\`\`

## Build

The server loads \`dist/index.js\`. \`npm run build\` in this folder compiles
\`src/\` into it; run it again after each change to the source.${buildAtRoot}

## Test

In this folder:

\`\`\`
npm test
\`\`\`
${rootRun}`;
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

async function writeNew(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, text, { flag: "wx" });
}

function globPart(part: string): string {
  if (part === "**") return ".*";
  if (part === "*") return "[^/]*";
  return part.replace(/[.+?^${}()|[\]\\]/g, "\\$&");
}

/** Converts an npm workspaces pattern ("plugins/*", "packages/core") to a regular expression. */
function workspacePattern(pattern: string): RegExp {
  const trimmed = pattern.replace(/^\.\//, "").replace(/\/+$/, "");
  return new RegExp(`^${trimmed.split(/(\*\*|\*)/).map(globPart).join("")}$`);
}

/** A package.json that declares npm workspaces: its folder, patterns and scripts. */
interface WorkspaceRoot {
  root: string;
  patterns: string[];
  scripts: Record<string, string>;
}

/** Finds the nearest package.json above `folder` that declares npm workspaces. */
async function findWorkspaceRoot(folder: string): Promise<WorkspaceRoot | undefined> {
  for (let current = folder; ; current = path.dirname(current)) {
    try {
      const manifest = JSON.parse(await readFile(path.join(current, "package.json"), "utf8")) as {
        workspaces?: string[] | { packages?: string[] };
        scripts?: Record<string, string>;
      };
      const workspaces = Array.isArray(manifest.workspaces) ? manifest.workspaces : manifest.workspaces?.packages;
      if (workspaces) return { root: current, patterns: workspaces, scripts: manifest.scripts ?? {} };
    } catch {
      // No package.json here, or one that is not JSON: look further up.
    }
    if (path.dirname(current) === current) return undefined;
  }
}

/** Returns the path of `folder` relative to the workspace root, with "/" separators. */
function workspaceRelative(workspace: WorkspaceRoot, folder: string): string {
  return path.relative(workspace.root, folder).split(path.sep).join("/");
}

/** Checks whether the workspace patterns of the root include `folder`. Negated patterns are skipped. */
function isWorkspaceMember(workspace: WorkspaceRoot, folder: string): boolean {
  const relative = workspaceRelative(workspace, folder);
  return workspace.patterns.some((pattern) => !pattern.startsWith("!") && workspacePattern(pattern).test(relative));
}

/**
 * Returns the TypeScript project that `npm install` in the workspace root
 * builds: the project given to `tsc -b` (or `tsc --build`) in the root's
 * prepare script, following `npm run NAME` steps. Returns undefined when
 * the prepare script runs no `tsc -b`.
 */
function installBuildProject(root: string, scripts: Record<string, string>): string | undefined {
  const followed = new Set<string>();
  let command = scripts.prepare;
  while (command !== undefined) {
    const build = /\btsc\s+(?:-b|--build)\b([^&|;]*)/.exec(command);
    if (build) {
      const project = build[1]!.trim().split(/\s+/).find((arg) => arg !== "" && !arg.startsWith("-")) ?? ".";
      return project.endsWith(".json") ? path.resolve(root, project) : path.resolve(root, project, "tsconfig.json");
    }
    const run = /\bnpm\s+run(?:-script)?\s+([^\s&|;]+)/.exec(command);
    if (!run || followed.has(run[1]!)) return undefined;
    followed.add(run[1]!);
    command = scripts[run[1]!];
  }
  return undefined;
}

/** The location of a new package folder, and the workspace root above it if there is one. */
interface PackagePlace {
  folder: string;
  workspace?: {
    root: string;
    /** The folder relative to the root, with "/" separators. */
    relative: string;
    /** True when the root's workspace patterns include the folder. */
    member: boolean;
    /** The TypeScript project that `npm install` in the root builds, if any. */
    buildProject: string | undefined;
  };
}

async function placePackage(folder: string): Promise<PackagePlace> {
  const found = await findWorkspaceRoot(path.dirname(folder));
  if (!found) return { folder };
  const relative = workspaceRelative(found, folder);
  const member = isWorkspaceMember(found, folder);
  const buildProject = installBuildProject(found.root, found.scripts);
  return { folder, workspace: { root: found.root, relative, member, buildProject } };
}

/** A TypeScript project file's settings, as far as the scaffold changes them. */
interface ProjectSettings {
  references?: unknown;
}

/**
 * Reads a TypeScript project file. Returns undefined when the file is
 * missing or is not a plain JSON object (a tsconfig file may have comments,
 * which JSON.parse rejects), because the scaffold then leaves it alone.
 */
async function readProject(project: string): Promise<ProjectSettings | undefined> {
  try {
    const settings: unknown = JSON.parse(await readFile(project, "utf8"));
    if (typeof settings !== "object" || settings === null || Array.isArray(settings)) return undefined;
    return settings as ProjectSettings;
  } catch {
    return undefined;
  }
}

/**
 * Adds `folder` to the references of the TypeScript project file
 * `project`, so that `tsc -b` on that project builds the new package after
 * the projects listed before it.
 */
async function addProjectReference(project: string, settings: ProjectSettings, folder: string): Promise<void> {
  const references: unknown[] = Array.isArray(settings.references) ? settings.references : [];
  const base = path.dirname(project);
  const listed = references.some((reference) => {
    const target = (reference as { path?: unknown } | null)?.path;
    return typeof target === "string" && path.resolve(base, target) === folder;
  });
  if (listed) return;
  references.push({ path: path.relative(base, folder).split(path.sep).join("/") });
  settings.references = references;

  // One reference per line, as tsconfig files are usually written by hand.
  const text = JSON.stringify(settings, null, 2).replace(/\{\n\s*("path": "(?:[^"\\]|\\.)*")\n\s*\}/g, "{ $1 }");
  const temporary = `${project}.${process.pid}.tmp`;
  await writeFile(temporary, `${text}\n`);
  await rename(temporary, project);
}

/**
 * Returns what must happen before the server can load the new package.
 * npm links a workspace package into node_modules only at the next
 * `npm install` in the workspace root, and the server loads the package's
 * built `dist/index.js`. `built` is true when that install also builds the
 * package, because it was added to the project that the root's prepare
 * script builds.
 */
function nextStep(name: string, place: PackagePlace, built: boolean, linkedCheckout: string | undefined): string {
  const use = `use: "${name}"`;
  const { folder, workspace } = place;
  const links = linkedCheckout
    ? `its devDependencies @mailroom/core and @mailroom/testing link to the packages of ${linkedCheckout}, because the @mailroom packages are not on the npm registry. `
    : "";
  if (!workspace && !linkedCheckout) {
    return `${folder} is not in an npm workspace, and @mailroom/core and @mailroom/testing are not on the npm registry, so "npm install" in it fails. Create the plugin inside a Mailroom checkout (mailroom new plugin ${name} --dir CHECKOUT/plugins), or set those devDependencies to file: links to the checkout's packages/core and packages/testing folders`;
  }
  if (!workspace) {
    return `${folder} is not in an npm workspace; ${links}Build it (npm install, then npm run build, in ${folder}) and install it where the server runs (npm install ${folder}) before the server can load ${use}`;
  }
  if (!workspace.member) {
    const manifest = path.join(workspace.root, "package.json");
    return `${links}${workspace.relative} is not in the workspaces of ${manifest}; add it there, run "npm install" in ${workspace.root} and build it (npm run build -w ${name}) before the server can load ${use}`;
  }
  if (!built || !workspace.buildProject) {
    return `${links}run "npm install" in ${workspace.root}, which links the new workspace package into node_modules, then build it (npm run build -w ${name}) before the server can load ${use}`;
  }
  const project = path.relative(workspace.root, workspace.buildProject);
  return `run "npm install" in ${workspace.root} before the server can load ${use}: it links the new workspace package into node_modules and builds it with the other projects in ${project}`;
}

/** Quotes a path for a shell command line when it has characters that the shell would split or expand. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
}

/** Names of vitest config files, any of which marks the checkout's root. */
const VITEST_CONFIGS = ["vitest.config.ts", "vitest.config.mts", "vitest.config.js", "vitest.config.mjs"];

/**
 * Finds the Mailroom checkout that this CLI runs from: the workspace root
 * that lists the CLI's package folder and has a vitest config. Its config
 * runs the test files directly in the folder given with `--dir`, with
 * @mailroom/core and @mailroom/testing from the checkout. Returns undefined
 * for a CLI installed outside such a checkout.
 */
async function findCheckout(): Promise<string | undefined> {
  const cliFolder = fileURLToPath(new URL("..", import.meta.url));
  const found = await findWorkspaceRoot(cliFolder);
  if (!found) return undefined;
  if (!isWorkspaceMember(found, cliFolder)) return undefined;
  for (const name of VITEST_CONFIGS) if (await exists(path.join(found.root, name))) return found.root;
  return undefined;
}

/**
 * Returns the command that runs the test of a local plugin in `dir`. The
 * checkout's vitest config takes the test files directly in the folder of
 * `--dir`, inside the checkout or outside it, and `npm test` in the
 * checkout leaves that folder out unless its own patterns include it.
 */
async function localTestStep(dir: string, testFile: string): Promise<string> {
  const checkout = await findCheckout();
  if (!checkout) {
    return `@mailroom/testing is not on the npm registry, so run its test in a Mailroom checkout, whose vitest config runs the test files in a folder given with --dir: npx vitest run --dir ${shellWord(dir)} (${shellWord(testFile)})`;
  }
  const relative = path.relative(checkout, dir);
  const inside = !relative.startsWith("..") && !path.isAbsolute(relative);
  const target = inside ? relative.split(path.sep).join("/") || "." : dir;
  const command = `npx vitest run --dir ${shellWord(target)}`;
  if (path.resolve(process.cwd()) === checkout) return `run its test with: ${command}`;
  return `run its test in ${checkout} with: ${command}`;
}

/**
 * Returns the folders of @mailroom/core and @mailroom/testing in the
 * checkout that this CLI runs from, for file: links in a package that the
 * checkout's workspaces do not provide them to. Returns undefined when
 * there is no checkout or `place` is in the checkout's own workspace.
 */
async function checkoutPackages(place: PackagePlace): Promise<{ checkout: string; core: string; testing: string } | undefined> {
  const checkout = await findCheckout();
  if (!checkout || place.workspace?.root === checkout) return undefined;
  const core = path.join(checkout, "packages", "core");
  const testing = path.join(checkout, "packages", "testing");
  if (!(await exists(path.join(core, "package.json"))) || !(await exists(path.join(testing, "package.json")))) return undefined;
  return { checkout, core, testing };
}

/**
 * Creates a plugin: a package folder `dir/NAME` by default, or with `local`
 * a single `dir/NAME.ts` and its test. Returns the files written; refuses
 * to overwrite anything. The package is private unless `publish` is true.
 * `note` receives the next step (printed to stderr
 * by default): for a package, what is still needed before the server can
 * load it, and for a local plugin, the command that runs its test.
 */
export async function scaffoldPlugin(options: {
  name: string;
  dir: string;
  local: boolean;
  publish?: boolean;
  note?: (text: string) => void;
}): Promise<string[]> {
  const { name, dir, local } = options;
  const note = options.note ?? ((text: string) => process.stderr.write(`mailroom: next step: ${text}\n`));
  if (!/^(?:@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/.test(name)) {
    throw new UsageError(`invalid plugin name "${name}": use lower-case letters, digits, ".", "_" and "-", with an optional @scope/`);
  }
  const base = name.split("/").pop()!;
  if (local && options.publish) throw new UsageError("--public applies to a plugin package, not to a --local plugin");

  if (local) {
    const files = [path.join(dir, `${base}.ts`), path.join(dir, `${base}.test.ts`)];
    for (const file of files) if (await exists(file)) throw new Error(`${file} already exists`);
    await writeNew(files[0]!, pluginSource(base));
    await writeNew(files[1]!, testSource(`./${base}.ts`));
    note(await localTestStep(dir, files[1]!));
    return files;
  }

  const root = path.join(dir, base);
  if (await exists(root)) throw new Error(`${root} already exists`);
  const place = await placePackage(root);
  // Inside a workspace whose `npm install` runs `tsc -b` on a project file,
  // the package joins that project, so that the install builds it too.
  const buildProject = place.workspace?.member ? place.workspace.buildProject : undefined;
  const buildSettings = buildProject ? await readProject(buildProject) : undefined;
  // Outside the checkout's workspaces, npm would look for the @mailroom
  // packages on the registry, where they are not published.
  const linked = await checkoutPackages(place);
  const packageJson = {
    name,
    version: "0.1.0",
    // A private package is skipped by `lerna publish` and rejected by `npm publish`.
    ...(options.publish ? {} : { private: true }),
    description: `Mailroom plugin ${name}`,
    type: "module",
    main: "./dist/index.js",
    types: "./dist/index.d.ts",
    exports: { ".": { types: "./dist/index.d.ts", default: "./dist/index.js" } },
    files: ["dist", "!dist/**/*.test.*", "README.md"],
    scripts: { build: "tsc -p .", test: "vitest run" },
    peerDependencies: { "@mailroom/core": `^${CORE_VERSION}` },
    devDependencies: {
      ...(linked ? { "@mailroom/core": `file:${linked.core}` } : {}),
      "@mailroom/testing": linked ? `file:${linked.testing}` : `^${CORE_VERSION}`,
      typescript: "5.9.3",
      vitest: "4.1.12",
    },
  };
  const tsconfig = {
    compilerOptions: {
      target: "ES2022",
      module: "NodeNext",
      moduleResolution: "NodeNext",
      strict: true,
      declaration: true,
      rootDir: "src",
      outDir: "dist",
      skipLibCheck: true,
      // A project that another project references must be composite. Its
      // build record goes inside dist/, so deleting dist/ makes tsc -b build again.
      ...(buildSettings ? { composite: true, tsBuildInfoFile: "dist/tsconfig.tsbuildinfo" } : {}),
    },
    include: ["src"],
    exclude: ["src/**/*.test.ts"],
  };
  const files: [string, string][] = [
    [path.join(root, "package.json"), `${JSON.stringify(packageJson, null, 2)}\n`],
    [path.join(root, "tsconfig.json"), `${JSON.stringify(tsconfig, null, 2)}\n`],
    [path.join(root, "vitest.config.ts"), VITEST_CONFIG],
    [path.join(root, "README.md"), readme(name, false, place.workspace?.member ? place.workspace.relative : undefined, buildSettings !== undefined)],
    [path.join(root, "src", "index.ts"), pluginSource(name)],
    [path.join(root, "src", "index.test.ts"), testSource("./index.js")],
  ];
  for (const [file, text] of files) await writeNew(file, text);
  if (buildProject && buildSettings) await addProjectReference(buildProject, buildSettings, root);
  note(nextStep(name, place, buildSettings !== undefined, linked?.checkout));
  return files.map(([file]) => file);
}
