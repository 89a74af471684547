import { readFileSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isModuleNotFound, resolveImport } from "./package-import.js";

/** An import of a package plugin that failed: the module it was resolved from, and its error. */
export interface FailedImport {
  from: URL;
  error: unknown;
}

/** Returns the package name of a bare specifier: `name` or `@scope/name`, without a subpath. */
function packageName(specifier: string): string {
  const parts = specifier.split("/");
  return parts.slice(0, specifier.startsWith("@") ? 2 : 1).join("/");
}

function isDirectory(file: string): boolean {
  try {
    return statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Finds the folder of package `name` that an import in the module at `from`
 * (a file or a folder URL ending in "/") would use: node_modules/NAME in
 * that folder or the nearest one above it. Returns the path as found, with
 * symlinks kept.
 */
function findPackageFolder(name: string, from: URL): string | undefined {
  for (let dir = path.resolve(fileURLToPath(new URL(".", from))); ; dir = path.dirname(dir)) {
    const folder = path.join(dir, "node_modules", name);
    if (isDirectory(folder)) return folder;
    if (dir === path.dirname(dir)) return undefined;
  }
}

/** Reads a package's package.json. Returns undefined when it is missing or invalid. */
function readManifest(folder: string): { main?: unknown; scripts?: Record<string, unknown> } | undefined {
  try {
    return JSON.parse(readFileSync(path.join(folder, "package.json"), "utf8")) as { main?: unknown };
  } catch {
    return undefined;
  }
}

/**
 * Returns the entry file named in a resolution error: the file that
 * `exports` or a subpath pointed to, or, when no file matched `main` or
 * index.js, the `main` file (index.js without one). `link` is the package
 * folder as the resolver saw it and `folder` its real path.
 */
function missingEntryFile(error: unknown, link: string, folder: string): string {
  const url = (error as { url?: unknown }).url;
  if (typeof url === "string") return path.join(folder, path.relative(link, fileURLToPath(url)));
  const main = readManifest(folder)?.main;
  return typeof main === "string" && main !== "" ? path.resolve(folder, main) : path.join(folder, "index.js");
}

/**
 * Returns how to make a package's missing entry file: build the workspace
 * root that contains the package, build the package itself, or reinstall it.
 */
function buildAdvice(folder: string, name: string): string {
  for (let dir = path.dirname(folder); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const manifest = readManifest(dir) as { workspaces?: unknown; scripts?: Record<string, unknown> } | undefined;
    if (manifest?.workspaces !== undefined && typeof manifest.scripts?.build === "string") {
      return `build it (npm run build in ${dir})`;
    }
  }
  if (typeof readManifest(folder)?.scripts?.build === "string") return `build it (npm run build in ${folder})`;
  return `reinstall it (npm install ${name})`;
}

/** Explains why package `name`, installed in `link`, failed to import from `from`. */
function installedPackageError(specifier: string, name: string, link: string, from: URL, cause: unknown): Error {
  const folder = realpathSync(link);
  try {
    resolveImport(specifier, from);
  } catch (error) {
    if (!isModuleNotFound(error)) return error instanceof Error ? error : new Error(String(error));
    const entry = missingEntryFile(error, link, folder);
    const next = buildAdvice(folder, name);
    return new Error(`package ${name} is installed in ${folder} but its entry file ${entry} does not exist; ${next}`, { cause });
  }

  // The entry exists, so the module that is missing is one the plugin imports.
  const detail = cause instanceof Error ? cause.message : String(cause);
  const dependency = /^Cannot find package '([^']+)'/.exec(detail)?.[1];
  const next = dependency ? `; add ${dependency} to the dependencies of ${name} and install it` : "";
  return new Error(`package ${name} in ${folder} imports a module that was not found: ${detail}${next}`, { cause });
}

/**
 * Builds the error for a package plugin whose import failed because a
 * module was not found. `attempts` are the imports tried, in order (beside
 * @mailroom/core, then from the config file), and the first one whose
 * package folder exists is explained. The message distinguishes a package
 * that is not installed, one that is installed but lacks its entry file (a
 * workspace package that was never built), and a module that the plugin
 * imports.
 */
export function missingPackageError(specifier: string, attempts: readonly FailedImport[], configDir: string): Error {
  const name = packageName(specifier);
  for (const { from, error } of attempts) {
    const link = findPackageFolder(name, from);
    if (link !== undefined) return installedPackageError(specifier, name, link, from, error);
  }
  return new Error(
    `package not found in ${configDir} or beside @mailroom/core; install it there (npm install ${name}) or give a path that starts with ./`,
    { cause: attempts[0]?.error },
  );
}
