import { existsSync, readFileSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

/** The package.json fields that decide a package's entry file. */
interface Manifest {
  main?: unknown;
  exports?: unknown;
  scripts?: Record<string, unknown>;
}

/** The `exports` conditions that Node.js 20 matches when it imports a package as an ES module. */
const IMPORT_CONDITIONS = new Set(["node", "import", "default"]);

/** Returns the first target in an `exports` value that an import would use. */
function exportTarget(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    for (const item of value) {
      const target = exportTarget(item);
      if (target !== undefined) return target;
    }
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  for (const [condition, nested] of Object.entries(value)) {
    if (!IMPORT_CONDITIONS.has(condition)) continue;
    const target = exportTarget(nested);
    if (target !== undefined) return target;
  }
  return undefined;
}

/** Splits a bare specifier into the package name and the subpath after it ("" for the package itself). */
function splitSpecifier(specifier: string): { name: string; subpath: string } {
  const parts = specifier.split("/");
  const length = specifier.startsWith("@") ? 2 : 1;
  return { name: parts.slice(0, length).join("/"), subpath: parts.slice(length).join("/") };
}

/**
 * Returns the files that may be the entry of an import of `subpath` of the
 * package ("" for the package itself): the target in its `exports`, or else
 * `main` with the file names that Node.js tries for it, or else index.js.
 * The first one is the name to report.
 */
function entryCandidates(folder: string, manifest: Manifest, subpath: string): string[] {
  const { exports, main } = manifest;
  const key = subpath === "" ? "." : `./${subpath}`;
  if (exports !== undefined && exports !== null) {
    const bySubpath = typeof exports === "object" && !Array.isArray(exports) && Object.keys(exports).some((entry) => entry.startsWith("."));
    const value = bySubpath ? (exports as Record<string, unknown>)[key] : key === "." ? exports : undefined;
    const target = exportTarget(value);
    return target === undefined ? [] : [path.resolve(folder, target)];
  }
  if (subpath !== "") return [path.resolve(folder, subpath)];
  if (typeof main === "string" && main !== "") {
    const file = path.resolve(folder, main);
    return [file, `${file}.js`, `${file}.json`, `${file}.node`, path.join(file, "index.js"), path.join(folder, "index.js")];
  }
  return [path.join(folder, "index.js")];
}

/** Finds the folder of an installed package in the node_modules folders that Node.js searches from `base`. */
function findInstalled(name: string, base: string): string | undefined {
  for (const modules of createRequire(base).resolve.paths(name) ?? []) {
    const folder = path.join(modules, name);
    if (existsSync(path.join(folder, "package.json"))) return realpathSync(folder);
  }
  return undefined;
}

/**
 * Builds the error for a package plugin whose import failed because a
 * module was not found, after it was looked for beside @mailroom/core and
 * beside the config file. The message distinguishes a package that is not
 * installed, one that is installed but lacks its entry file (a workspace
 * package that was never built), and a module that the plugin imports.
 */
export function missingPackageError(specifier: string, configDir: string, cause: unknown): Error {
  const { name, subpath } = splitSpecifier(specifier);
  const folder = findInstalled(name, import.meta.url) ?? findInstalled(name, path.join(configDir, "package.json"));
  if (!folder) {
    return new Error(
      `package not found in ${configDir} or beside @mailroom/core; install it there (npm install ${name}) or give a path that starts with ./`,
      { cause },
    );
  }

  let manifest: Manifest;
  try {
    manifest = JSON.parse(readFileSync(path.join(folder, "package.json"), "utf8")) as Manifest;
  } catch (error) {
    return new Error(`package ${name} in ${folder} has an invalid package.json: ${(error as Error).message}`, { cause });
  }
  const candidates = entryCandidates(folder, manifest, subpath);
  if (candidates.length > 0 && !candidates.some((file) => existsSync(file))) {
    const next = typeof manifest.scripts?.build === "string" ? `build it (npm run build in ${folder})` : `reinstall it (npm install ${name})`;
    return new Error(`package ${name} is installed in ${folder} but its entry file ${candidates[0]} does not exist; ${next}`, { cause });
  }

  // The entry exists, so the module that is missing is one the plugin imports.
  const detail = cause instanceof Error ? cause.message : String(cause);
  const dependency = /^Cannot find package '([^']+)'/.exec(detail)?.[1];
  const next = dependency ? `; add ${dependency} to the dependencies of ${name} and install it` : "";
  return new Error(`package ${name} in ${folder} imports a module that was not found: ${detail}${next}`, { cause });
}
