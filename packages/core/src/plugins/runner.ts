import type { LevelWithSilent, Logger } from "pino";
import { isAnswer, type Answer } from "../answers.js";
import type { HookArgs, HookHandler, HookName } from "../hooks.js";
import type { PluginHooks } from "./plugin.js";

/** A plugin after setup: its handlers and the routes it stores. */
export interface LoadedPlugin {
  name: string;
  hooks: PluginHooks;
  routes: ReadonlySet<string>;
  logger: Logger;
}

/**
 * The log destination of a hook call: a logger, or a connection or
 * transaction, whose logger is made only when something is logged.
 */
export type LogTarget = Logger | { readonly logger: Logger; logs(level: LevelWithSilent): boolean };

function loggerOf(target: LogTarget): Logger {
  return "logs" in target && typeof target.logs === "function" ? target.logger : (target as Logger);
}

function logs(target: LogTarget, level: LevelWithSilent): boolean {
  return "logs" in target && typeof target.logs === "function" ? target.logs(level) : (target as Logger).isLevelEnabled(level);
}

/** The outcome of running a hook. */
export type HookOutcome =
  | { kind: "cont" }
  | { kind: "answer"; answer: Answer; plugin: string }
  | { kind: "error"; plugin: string; error: unknown };

class HookTimeoutError extends Error {
  readonly code = "MAILROOM_HOOK_TIMEOUT";
  constructor(plugin: string, hook: string, ms: number) {
    super(`plugin ${plugin} did not answer ${hook} within ${ms} ms`);
    this.name = "HookTimeoutError";
  }
}

/**
 * Calls plugins' handlers in config order with a deadline for each call.
 * A handler that throws, returns something that is not an answer or misses
 * the deadline gives an error outcome naming the plugin; it never throws.
 */
export class HookRunner {
  /** The plugins with a handler for each hook, in config order, filled on first use. */
  private readonly handlers = new Map<HookName, LoadedPlugin[]>();

  constructor(
    readonly plugins: readonly LoadedPlugin[],
    private readonly timeout: number,
    /** Receives the duration of every handler call, for metrics. */
    private readonly observe?: (plugin: string, hook: HookName, seconds: number) => void,
  ) {}

  /** Returns true when some plugin handles the hook. */
  handles(hook: HookName): boolean {
    return this.pluginsFor(hook).length > 0;
  }

  /** Returns the plugin that registered `route`, if any. */
  routeOwner(route: string): LoadedPlugin | undefined {
    return this.plugins.find((plugin) => plugin.routes.has(route));
  }

  // Plugins return their handlers from setup, so the lists never change afterwards.
  private pluginsFor(hook: HookName): LoadedPlugin[] {
    let list = this.handlers.get(hook);
    if (!list) {
      list = this.plugins.filter((plugin) => typeof plugin.hooks[hook] === "function");
      this.handlers.set(hook, list);
    }
    return list;
  }

  /** Runs one plugin's handler for a hook. */
  async runPlugin<H extends HookName>(
    plugin: LoadedPlugin,
    hook: H,
    args: HookArgs[H],
    logger: LogTarget,
  ): Promise<HookOutcome> {
    const handler = plugin.hooks[hook] as HookHandler<H> | undefined;
    if (typeof handler !== "function") return CONT;

    const started = performance.now();
    let outcome: HookOutcome;
    try {
      let result = handler(args);
      // Only a handler that returned a promise needs a timer: a synchronous
      // one is over by now, and the elapsed time below catches a slow one.
      if (isPromiseLike(result)) result = await this.withDeadline(result, plugin.name, hook);
      // A handler that blocked the event loop past the deadline settles
      // before the timer can fire, so its late answer counts as a timeout too.
      if (performance.now() - started > this.timeout) {
        throw new HookTimeoutError(plugin.name, hook, this.timeout);
      }
      outcome = toOutcome(result, plugin.name, hook);
    } catch (error) {
      loggerOf(logger).error({ err: error, plugin: plugin.name, hook }, "hook failed");
      outcome = { kind: "error", plugin: plugin.name, error };
    }

    const elapsed = performance.now() - started;
    this.observe?.(plugin.name, hook, elapsed / 1000);
    if (logs(logger, "debug")) {
      loggerOf(logger).debug(
        {
          plugin: plugin.name,
          hook,
          answer: outcome.kind === "answer" ? outcome.answer.verdict : outcome.kind.toUpperCase(),
          ms: Math.round(elapsed * 100) / 100,
        },
        "hook",
      );
    }
    return outcome;
  }

  /** Waits for a handler's promise, or rejects with a HookTimeoutError at the deadline. */
  private withDeadline<T>(result: PromiseLike<T>, plugin: string, hook: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HookTimeoutError(plugin, hook, this.timeout)), this.timeout);
    });
    return Promise.race([result, deadline]).finally(() => clearTimeout(timer));
  }

  /** Runs the hook until the first plugin that answers something other than CONT. */
  async run<H extends HookName>(
    hook: H,
    args: HookArgs[H],
    logger: LogTarget,
  ): Promise<HookOutcome> {
    for (const plugin of this.pluginsFor(hook)) {
      const outcome = await this.runPlugin(plugin, hook, args, logger);
      if (outcome.kind !== "cont") return outcome;
    }
    return CONT_OUTCOME;
  }

  /** Runs the hook in every plugin (reset, disconnect); failures are only logged. */
  async runAll<H extends HookName>(
    hook: H,
    args: HookArgs[H],
    logger: LogTarget,
  ): Promise<void> {
    for (const plugin of this.pluginsFor(hook)) {
      await this.runPlugin(plugin, hook, args, logger);
    }
  }
}

const CONT_OUTCOME: HookOutcome = Object.freeze({ kind: "cont" });
const CONT = Promise.resolve(CONT_OUTCOME);

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null | undefined)?.then === "function";
}

/** Turns a handler's return value into an outcome; throws on anything but CONT or an answer. */
function toOutcome(result: unknown, plugin: string, hook: string): HookOutcome {
  if (result === undefined || result === null) return CONT_OUTCOME;
  if (isAnswer(result)) return { kind: "answer", answer: result, plugin };
  throw new TypeError(
    `plugin ${plugin} returned ${JSON.stringify(result)} from ${hook}; expected undefined or an answer from ok(), deny(), denySoft(), denyDisconnect() or denySoftDisconnect()`,
  );
}
