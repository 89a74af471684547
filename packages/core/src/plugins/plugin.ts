import type { DependencyContainer } from "tsyringe";
import type { Logger } from "pino";
import type { z } from "zod";
import type { HookHandlers } from "../hooks.js";
import type { MailroomConfig } from "../config/schema.js";

/** The context that `setup` receives. */
export interface PluginContext<Options> {
  /** The plugin's options, parsed and defaulted by its schema. */
  options: Options;
  /** A pino child logger bound to `{ plugin: name }`. */
  logger: Logger;
  /**
   * The DI container of this plugin set: a child of the server's container,
   * made anew for the start and for each reload. Resolve shared services by
   * their `TOKENS`; register your own with `container.register(token, {
   * useValue })`. What the plugins of a set register is seen by that set
   * alone, and is gone with it when a reload replaces or rejects the config.
   */
  container: DependencyContainer;
  /** The whole validated config. */
  config: MailroomConfig;
  /** Folder of the config file, for resolving relative paths in options. */
  configDir: string;
  /**
   * Declares that this plugin stores recipients accepted with `ok({ route })`.
   * At queue the engine calls this plugin's queue handler with those recipients.
   */
  registerRoute(route: string): void;
}

/** The result of `setup`: hook handlers plus an optional start() and close(). */
export interface PluginHooks extends HookHandlers {
  /**
   * Starts the plugin's background work (timers, schedulers, watchers).
   * Runs once, in config order, when the plugin's set goes into service:
   * when the server starts listening, or when a reload takes effect, after
   * every plugin of the new config was set up. It never runs for a config
   * that a reload rejects, nor in `mailroom check`. setup() should only
   * prepare, so that a rejected config leaves nothing running. A start()
   * that throws or misses `server.setupTimeout` fails the start or the
   * reload, and the set is closed.
   */
  start?: () => void | Promise<void>;
  /**
   * Releases the plugin's resources; runs after its set's last connection
   * ended, or when a later plugin of a config that is being loaded fails.
   * A connection has ended once its disconnect hooks, and any hook still
   * running for it after its client left, finished. At shutdown the server
   * waits for that at most 5 seconds past `server.shutdownTimeout`, then
   * logs the connections it leaves behind and closes the plugins anyway.
   * It runs whether or not start() ran, and after a start() in progress.
   * One that misses `server.closeTimeout` is logged and left running.
   */
  close?: () => void | Promise<void>;
}

/** A plugin as its module exports it: `export default definePlugin({...})`. */
export interface PluginDefinition<Schema extends z.ZodType = z.ZodType> {
  readonly name: string;
  /** zod schema of the `with:` block; omitted means no options. */
  readonly options?: Schema;
  setup(
    context: PluginContext<z.output<Schema>>,
  ): PluginHooks | Promise<PluginHooks>;
  readonly [PLUGIN_MARK]?: true;
}

const PLUGIN_MARK = Symbol.for("mailroom.Plugin");

/** Declares a plugin; the function only checks its shape and marks it. */
export function definePlugin<Schema extends z.ZodType>(
  definition: PluginDefinition<Schema>,
): PluginDefinition<Schema> {
  if (typeof definition?.name !== "string" || definition.name === "") {
    throw new TypeError("definePlugin: name must be a non-empty string");
  }
  if (typeof definition.setup !== "function") {
    throw new TypeError(`definePlugin(${definition.name}): setup must be a function`);
  }
  return Object.freeze({ ...definition, [PLUGIN_MARK]: true as const });
}

/** Checks that a module's default export looks like a plugin definition. */
export function isPluginDefinition(value: unknown): value is PluginDefinition {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as PluginDefinition).name === "string" &&
    typeof (value as PluginDefinition).setup === "function"
  );
}
