import type { LevelWithSilent, Logger } from "pino";
import { isAnswer, type Answer } from "../answers.js";
import { asciiReplyText, hasNonAsciiText, replacedCodes } from "../replies.js";
import type { HookArgs, HookHandler, HookName } from "../hooks.js";
import type { PluginHooks } from "./plugin.js";

/** A plugin after setup: its handlers and the routes it stores. */
export interface LoadedPlugin {
  name: string;
  hooks: PluginHooks;
  routes: ReadonlySet<string>;
  logger: Logger;
  /** Deadline of close() in ms, from `server.closeTimeout`, or 30000 when unset. */
  closeTimeout?: number;
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
  /** Plugin and hook pairs whose non-ASCII reply text was already logged at warn. */
  private readonly warnedNonAscii = new Set<string>();
  /** Plugin, hook and answer code combinations whose replacement was already logged at warn. */
  private readonly warnedCodes = new Set<string>();
  /** The first route of each plugin that registered one, by plugin name, filled on first use. */
  private readonly firstRoutes = new Map<string, string>();

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

  /**
   * Returns the first route that the named plugin registered, if any: the
   * route of a recipient that the plugin accepted without naming one.
   */
  firstRoute(pluginName: string): string | undefined {
    const cached = this.firstRoutes.get(pluginName);
    if (cached !== undefined) return cached;
    const plugin = this.plugins.find((candidate) => candidate.name === pluginName);
    const route: string | undefined = plugin?.routes.values().next().value;
    if (route !== undefined) this.firstRoutes.set(pluginName, route);
    return route;
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
  runPlugin<H extends HookName>(
    plugin: LoadedPlugin,
    hook: H,
    args: HookArgs[H],
    logger: LogTarget,
  ): Promise<HookOutcome> {
    return Promise.resolve(this.call(plugin, hook, args, logger));
  }

  /**
   * Calls one handler. The outcome of a handler that returns a plain value
   * comes back at once, without a promise. A handler that returns a promise
   * gets a promise with a deadline timer.
   */
  private call<H extends HookName>(
    plugin: LoadedPlugin,
    hook: H,
    args: HookArgs[H],
    logger: LogTarget,
  ): HookOutcome | Promise<HookOutcome> {
    const handler = plugin.hooks[hook] as HookHandler<H> | undefined;
    if (typeof handler !== "function") return CONT_OUTCOME;

    const started = performance.now();
    let result: unknown;
    try {
      result = handler(args);
    } catch (error) {
      return this.settle(plugin, hook, logger, started, { error });
    }
    if (!isPromiseLike(result)) return this.settle(plugin, hook, logger, started, { result });
    return this.withDeadline(result, plugin.name, hook).then(
      (value) => this.settle(plugin, hook, logger, started, { result: value }),
      (error: unknown) => this.settle(plugin, hook, logger, started, { error }),
    );
  }

  /** Turns a handler's result or error into an outcome, and logs and measures the call. */
  private settle(
    plugin: LoadedPlugin,
    hook: HookName,
    logger: LogTarget,
    started: number,
    ended: { result?: unknown; error?: unknown },
  ): HookOutcome {
    let outcome: HookOutcome;
    const elapsed = performance.now() - started;
    try {
      if ("error" in ended) throw ended.error;
      // A handler that blocked the event loop past the deadline settles
      // before the timer can fire, so its late answer counts as a timeout too.
      if (elapsed > this.timeout) throw new HookTimeoutError(plugin.name, hook, this.timeout);
      outcome = toOutcome(ended.result, plugin.name, hook);
      if (outcome.kind === "answer") {
        outcome = this.asciiMessage(outcome, hook, logger);
        this.checkCodes(outcome.answer, outcome.plugin, hook, logger);
      }
    } catch (error) {
      loggerOf(logger).error({ err: error, plugin: plugin.name, hook }, "hook failed");
      outcome = { kind: "error", plugin: plugin.name, error };
    }

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

  /**
   * Replaces characters outside US-ASCII in an answer's reply text with "?",
   * because RFC 5321 allows only US-ASCII there. The original text is logged,
   * at warn the first time for each plugin and hook and at debug after that.
   */
  private asciiMessage(
    outcome: { kind: "answer"; answer: Answer; plugin: string },
    hook: HookName,
    logger: LogTarget,
  ): { kind: "answer"; answer: Answer; plugin: string } {
    const message = outcome.answer.message;
    if (typeof message !== "string" || !hasNonAsciiText(message)) return outcome;
    const key = `${outcome.plugin}\0${hook}`;
    const level = this.warnedNonAscii.has(key) ? "debug" : "warn";
    this.warnedNonAscii.add(key);
    if (logs(logger, level)) {
      loggerOf(logger)[level](
        { plugin: outcome.plugin, hook, message },
        "reply text contains characters outside US-ASCII; each is sent as ?",
      );
    }
    const answer = Object.freeze({ ...outcome.answer, message: asciiReplyText(message) });
    return { kind: "answer", answer, plugin: outcome.plugin };
  }

  /**
   * Logs an answer whose code or enhanced code its reply does not use,
   * because the code does not fit the verdict or is invalid. The first time
   * for each plugin, hook and pair of codes goes to warn and repeats go to
   * debug, so a busy server does not flood its log.
   */
  private checkCodes(answer: Answer, plugin: string, hook: HookName, logger: LogTarget): void {
    if (answer.code === undefined && answer.enhanced === undefined) return;
    const replaced = replacedCodes(hook, answer);
    if (!replaced) return;
    const key = `${plugin}\0${hook}\0${String(answer.code)}\0${String(answer.enhanced)}`;
    let level: "warn" | "debug" = "debug";
    if (!this.warnedCodes.has(key) && this.warnedCodes.size < MAX_WARNED_CODES) {
      this.warnedCodes.add(key);
      level = "warn";
    }
    if (!logs(logger, level)) return;
    loggerOf(logger)[level](
      {
        plugin,
        hook,
        verdict: answer.verdict,
        givenCode: answer.code,
        givenEnhanced: answer.enhanced,
        usedCode: replaced.usedCode,
        usedEnhanced: replaced.usedEnhanced,
        reason: replaced.reason,
      },
      "plugin answer code replaced in the reply",
    );
  }

  /** Waits for a handler's promise, or rejects with a HookTimeoutError at the deadline. */
  private withDeadline<T>(result: PromiseLike<T>, plugin: string, hook: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new HookTimeoutError(plugin, hook, this.timeout)), this.timeout);
      result.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  /** Runs the hook until the first plugin that answers something other than CONT. */
  run<H extends HookName>(hook: H, args: HookArgs[H], logger: LogTarget): Promise<HookOutcome> {
    return Promise.resolve(this.runFrom(this.pluginsFor(hook), 0, hook, args, logger));
  }

  // Synchronous handlers run one after the other in this loop; the first
  // promise moves the rest of the chain behind it.
  private runFrom<H extends HookName>(
    plugins: readonly LoadedPlugin[],
    first: number,
    hook: H,
    args: HookArgs[H],
    logger: LogTarget,
  ): HookOutcome | Promise<HookOutcome> {
    for (let index = first; index < plugins.length; index++) {
      const outcome = this.call(plugins[index]!, hook, args, logger);
      if (outcome instanceof Promise) {
        return outcome.then((settled) =>
          settled.kind === "cont" ? this.runFrom(plugins, index + 1, hook, args, logger) : settled,
        );
      }
      if (outcome.kind !== "cont") return outcome;
    }
    return CONT_OUTCOME;
  }

  /** Runs the hook in every plugin (reset, disconnect); failures are only logged. */
  async runAll<H extends HookName>(hook: H, args: HookArgs[H], logger: LogTarget): Promise<void> {
    for (const plugin of this.pluginsFor(hook)) {
      const outcome = this.call(plugin, hook, args, logger);
      if (outcome instanceof Promise) await outcome;
    }
  }
}

const CONT_OUTCOME: HookOutcome = Object.freeze({ kind: "cont" });

/**
 * How many distinct replaced codes a runner logs at warn; past it, every
 * replacement goes to debug. It bounds the memory of a plugin that makes up
 * a new invalid code for each answer.
 */
const MAX_WARNED_CODES = 1000;

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
