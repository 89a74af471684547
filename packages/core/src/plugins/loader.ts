import { stat } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { Logger } from "pino";
import type { DependencyContainer } from "tsyringe";
import { ConfigError, formatIssues, type LoadedConfig } from "../config/load.js";
import type { MailroomConfig } from "../config/schema.js";
import { HOOK_NAMES } from "../hooks.js";
import { errorCode } from "../logging.js";
import { readNearestPackageJson } from "../package-json.js";
import { missingPackageError } from "./missing-package.js";
import { isModuleNotFound, resolveImport } from "./package-import.js";
import { importCompiled } from "./typescript.js";
import { isPluginDefinition, type PluginDefinition, type PluginHooks } from "./plugin.js";
import type { LoadedPlugin } from "./runner.js";

function isPath(use: string): boolean {
  return use.startsWith(".") || path.isAbsolute(use);
}

/**
 * True for a JavaScript file that Node.js loads as an ES module: .mjs, or
 * .js under a package.json with "type": "module".
 */
function isModuleJavaScript(file: string): boolean {
  if (file.endsWith(".mjs")) return true;
  if (!file.endsWith(".js")) return false;
  return readNearestPackageJson(path.dirname(file))?.manifest?.type === "module";
}

/** Imports the module named by `use`: a path relative to the config file or a package specifier. */
async function importPlugin(use: string, configDir: string): Promise<unknown> {
  if (!isPath(use)) return importPackage(use, configDir);
  const file = path.resolve(configDir, use);
  // The modification time in the URL makes a reload import an edited file
  // anew. TypeScript and ES module files are compiled with their local
  // imports each time, and @mailroom/core resolves from any folder. A
  // CommonJS plugin's own requires stay cached until a restart.
  const { mtimeMs } = await stat(file);
  const url = `${pathToFileURL(file).href}?mtime=${Math.floor(mtimeMs)}`;
  if (/\.[cm]?tsx?$/.test(file) || isModuleJavaScript(file)) return importCompiled(file, url);
  return import(url);
}

/**
 * Imports a package plugin as an ES module: from where @mailroom/core is
 * installed, else as an import in a module in the config's folder would
 * resolve it, from the node_modules folders there and above.
 */
async function importPackage(use: string, configDir: string): Promise<unknown> {
  // A folder URL ends in "/", so that specifiers resolve from inside the folder.
  const besideConfig = pathToFileURL(path.join(configDir, path.sep));
  let besideCore: unknown;
  try {
    return await import(use);
  } catch (error) {
    if (!isModuleNotFound(error)) throw describeUnexported(error);
    besideCore = error;
  }

  let resolved: URL;
  try {
    resolved = resolveImport(use, besideConfig);
  } catch (error) {
    if (!isModuleNotFound(error)) throw describeUnexported(error);
    const attempts = [
      { from: new URL(import.meta.url), error: besideCore },
      { from: besideConfig, error },
    ];
    throw missingPackageError(use, attempts, configDir);
  }
  try {
    return await import(resolved.href);
  } catch (error) {
    if (!isModuleNotFound(error)) throw error;
    throw missingPackageError(use, [{ from: besideConfig, error }], configDir);
  }
}

/**
 * Appends the conditions that count to Node's error for a package whose
 * `exports` has no entry for an ES module import, such as one with only a
 * "require" condition.
 */
function describeUnexported(error: unknown): unknown {
  if (errorCode(error) !== "ERR_PACKAGE_PATH_NOT_EXPORTED") return error;
  return new Error(
    `${(error as Error).message}; plugins are imported as ES modules, so "exports" needs an entry with the condition "import", "node" or "default"`,
    { cause: error },
  );
}

const KNOWN_KEYS = new Set<string>([...HOOK_NAMES, "start", "close"]);

/**
 * Bounds a plugin's setup by server.setupTimeout. The pending timer also keeps
 * the process alive, so a setup whose promise never settles is reported
 * instead of Node exiting silently with code 13.
 */
function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`setup did not finish within ${ms} ms (server.setupTimeout)`)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/**
 * Loads every plugin of the config in order: imports it, validates its
 * options with its schema and runs its setup. Errors name the plugin, the
 * file and line of its entry and the option path. When an entry fails, the
 * plugins already set up are closed before the error is thrown, so a config
 * that fails part way leaves nothing of it running. `container` should be
 * one for this set of plugins alone (a child of the server's), so that the
 * services they registered go away with it.
 */
export async function loadPlugins(
  loaded: LoadedConfig,
  container: DependencyContainer,
  logger: Logger,
): Promise<LoadedPlugin[]> {
  const plugins: LoadedPlugin[] = [];
  try {
    for (const index of loaded.config.plugins.keys()) {
      plugins.push(await loadPlugin(loaded, index, container, logger));
    }
    checkRouteOwners(plugins, (index) => `${loaded.file}:${loaded.lineOf(["plugins", index, "use"]) ?? "?"}: plugins[${index}]: `);
  } catch (error) {
    await closePlugins(plugins, logger);
    throw error;
  }
  return plugins;
}

/**
 * Throws a ConfigError when two plugins of a set register the same route.
 * The engine hands a route's recipients to the first plugin that registered
 * it, so the later one would accept recipients that another plugin stores.
 * `where` returns the prefix that names a plugin's config entry.
 */
export function checkRouteOwners(plugins: readonly LoadedPlugin[], where: (index: number) => string = () => ""): void {
  const owners = new Map<string, number>();
  for (const [index, plugin] of plugins.entries()) {
    for (const route of plugin.routes) {
      const first = owners.get(route);
      if (first === undefined) {
        owners.set(route, index);
        continue;
      }
      throw new ConfigError(
        `${where(index)}plugin ${plugin.name} registers the route "${route}", which plugin ${plugins[first]!.name} ` +
          `(plugins[${first}]) registered first. The engine would store every recipient on it with ` +
          `${plugins[first]!.name}, so give each storing plugin a route of its own`,
      );
    }
  }
}

/** Imports, validates and sets up the plugin of entry `index`. */
async function loadPlugin(
  loaded: LoadedConfig,
  index: number,
  container: DependencyContainer,
  logger: Logger,
): Promise<LoadedPlugin> {
  const entry = loaded.config.plugins[index]!;
  const where = `${loaded.file}:${loaded.lineOf(["plugins", index, "use"]) ?? "?"}`;
  let module: unknown;
  try {
    module = await importPlugin(entry.use, loaded.dir);
  } catch (error) {
    throw new ConfigError(
      `${where}: plugins[${index}].use: cannot load plugin "${entry.use}": ${(error as Error).message}`,
      { cause: error },
    );
  }

  const definition = (module as { default?: unknown }).default ?? module;
  if (!isPluginDefinition(definition)) {
    throw new ConfigError(
      `${where}: plugins[${index}].use: "${entry.use}" does not export a plugin; expected \`export default definePlugin({ name, options, setup })\``,
    );
  }

  return setupPlugin(definition, entry.with, {
    container,
    logger,
    config: loaded.config,
    configDir: loaded.dir,
    entry: { file: loaded.file, lineOf: loaded.lineOf, index },
  });
}

/** The plugin set that setupPlugin sets a plugin up for: its container, logger and config. */
export interface PluginSetupEnvironment {
  /** The container of the plugin set, where the plugin finds and registers services. */
  container: DependencyContainer;
  /** The logger of the plugin set. The plugin gets a child of it with its name. */
  logger: Logger;
  config: MailroomConfig;
  /** The folder that relative option paths resolve against. */
  configDir: string;
  /** The config file and the index of the plugin's entry in `plugins`, named in error messages. */
  entry?: { file: string; lineOf: LoadedConfig["lineOf"]; index: number };
}

/**
 * Sets up one plugin as the server does: validates `rawOptions` with the
 * plugin's schema, runs its setup within `server.setupTimeout` and collects
 * the routes it registers. A plugin whose setup returns a handler for a hook
 * that does not exist is closed, and the call throws. Errors are
 * ConfigErrors naming the plugin, and its config entry when `env.entry` is
 * set.
 */
export async function setupPlugin(
  definition: PluginDefinition,
  rawOptions: Record<string, unknown>,
  env: PluginSetupEnvironment,
): Promise<LoadedPlugin> {
  const { entry, logger } = env;
  const where = entry ? `${entry.file}:${entry.lineOf(["plugins", entry.index, "use"]) ?? "?"}: ` : "";
  const options = parseOptions(definition, rawOptions, entry);
  const routes = new Set<string>();
  const pluginLogger = logger.child({ plugin: definition.name });
  const loadedPlugin = (hooks: PluginHooks | undefined): LoadedPlugin => ({
    name: definition.name,
    hooks: hooks ?? {},
    routes,
    logger: pluginLogger,
    closeTimeout: env.config.server.closeTimeout,
  });
  // An async wrapper, so a setup that throws at once rejects like one that fails later.
  const setup = (async () =>
    definition.setup({
      options,
      logger: pluginLogger,
      container: env.container,
      config: env.config,
      configDir: env.configDir,
      registerRoute: (route) => routes.add(route),
    }))();
  let hooks: PluginHooks;
  try {
    hooks = await withDeadline(setup, env.config.server.setupTimeout);
  } catch (error) {
    // A setup that finishes after its deadline is closed then, so that
    // nothing it started outlives the failed load.
    setup.then((late) => closePlugins([loadedPlugin(late)], logger)).catch(() => undefined);
    throw new ConfigError(`${where}plugin ${definition.name} failed to start: ${(error as Error).message}`, {
      cause: error,
    });
  }

  const plugin = loadedPlugin(hooks);
  const unknown = Object.keys(plugin.hooks).find((key) => !KNOWN_KEYS.has(key));
  if (unknown !== undefined) {
    await closePlugins([plugin], logger);
    throw new ConfigError(
      `${where}plugin ${definition.name} returned a handler for unknown hook "${unknown}"; hooks are ${HOOK_NAMES.join(", ")}`,
    );
  }
  return plugin;
}

/**
 * Validates a plugin's options. With a config entry, each issue names the
 * file, line and option path, and without one (the test kit) the option
 * path alone.
 */
function parseOptions(
  definition: PluginDefinition,
  options: Record<string, unknown>,
  entry: PluginSetupEnvironment["entry"],
): unknown {
  if (!definition.options) {
    if (Object.keys(options).length === 0) return {};
    const message = `plugin ${definition.name} takes no options`;
    if (!entry) throw new ConfigError(message);
    const line = entry.lineOf(["plugins", entry.index, "with"]) ?? "?";
    throw new ConfigError(`${entry.file}:${line}: plugins[${entry.index}].with: ${message}`);
  }
  const result = definition.options.safeParse(options);
  if (result.success) return result.data;
  const details = entry
    ? `\n${formatIssues(result.error, { file: entry.file, lineOf: entry.lineOf, prefix: ["plugins", entry.index, "with"] })}`
    : ` ${result.error.issues.map((issue) => `${issue.path.map(String).join(".") || "(options)"}: ${issue.message}`).join("; ")}`;
  throw new ConfigError(`invalid options for plugin ${definition.name}:${details}`, { cause: result.error });
}

/** The default of `server.setupTimeout`, for a caller of startPlugins() that gives none. */
const DEFAULT_SETUP_TIMEOUT_MS = 30_000;

/**
 * Runs each plugin's start() in config order, once the set goes into
 * service, each within `timeoutMs` (`server.setupTimeout`, 30 s by
 * default). The pending timer also keeps the process alive, as in setup.
 * Throws on the first failure or missed deadline, naming the plugin. The
 * caller then closes the whole set, the plugins already started included.
 */
export async function startPlugins(plugins: readonly LoadedPlugin[], timeoutMs = DEFAULT_SETUP_TIMEOUT_MS): Promise<void> {
  for (const plugin of plugins) {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    let outcome: unknown;
    try {
      // An async wrapper, so a start() that throws at once rejects like one that fails later.
      outcome = await Promise.race([(async () => plugin.hooks.start?.())(), deadline]);
    } catch (error) {
      throw new Error(`plugin ${plugin.name}: start() failed: ${(error as Error).message}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
    if (outcome === "timeout") {
      throw new Error(`plugin ${plugin.name}: start() did not finish within ${timeoutMs} ms (server.setupTimeout)`);
    }
  }
}

/** The deadline of close() for a plugin set up without `server.closeTimeout`. */
const DEFAULT_CLOSE_TIMEOUT_MS = 30_000;

/**
 * Runs each plugin's close() in reverse config order, logging failures
 * instead of throwing. A close() that misses its plugin's `closeTimeout`
 * is logged and left running while the next plugin closes.
 */
export async function closePlugins(plugins: readonly LoadedPlugin[], logger: Logger): Promise<void> {
  for (const plugin of [...plugins].reverse()) {
    const timeout = plugin.closeTimeout ?? DEFAULT_CLOSE_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeout);
    });
    try {
      // An async wrapper, so a close() that throws at once is caught like one that rejects.
      const closing = (async () => plugin.hooks.close?.())();
      if ((await Promise.race([closing, deadline])) === "timeout") {
        logger.error(
          { plugin: plugin.name, timeoutMs: timeout },
          "plugin close() did not finish within server.closeTimeout; going on without it",
        );
        closing.catch((error: unknown) => logger.error({ err: error, plugin: plugin.name }, "plugin close failed"));
      }
    } catch (error) {
      logger.error({ err: error, plugin: plugin.name }, "plugin close failed");
    } finally {
      clearTimeout(timer);
    }
  }
}
