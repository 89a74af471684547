import { moduleResolve } from "import-meta-resolve";
import { errorCode } from "../logging.js";

/**
 * The `exports` conditions that Node.js 20 matches when it imports a
 * package as an ES module. The resolver matches "default" in any case.
 */
const IMPORT_CONDITIONS = new Set(["node", "import"]);

/**
 * Resolves `specifier` as an ES module `import` in the module at `parent`
 * would. It searches the node_modules folders from there up, and matches
 * `exports` with the import conditions and subpath patterns, else `main`
 * and index.js. Node.js 20 has
 * no unflagged API for that from another folder (`import.meta.resolve`
 * takes a parent only with --experimental-import-meta-resolve), so this
 * uses the import-meta-resolve package, a port of Node's resolver.
 *
 * Throws Node's errors: ERR_MODULE_NOT_FOUND (with a `url` property when
 * the package resolved to a file that does not exist),
 * ERR_PACKAGE_PATH_NOT_EXPORTED, ERR_INVALID_PACKAGE_CONFIG and the like.
 */
export function resolveImport(specifier: string, parent: URL): URL {
  return moduleResolve(specifier, parent, IMPORT_CONDITIONS, false);
}

/** True for the error of an import or resolution that found no module. */
export function isModuleNotFound(error: unknown): boolean {
  return errorCode(error) === "ERR_MODULE_NOT_FOUND";
}
