import type { Logger } from "pino";
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
  constructor(
    readonly plugins: readonly LoadedPlugin[],
    private readonly timeout: number,
    /** Receives the duration of every handler call, for metrics. */
    private readonly observe?: (plugin: string, hook: HookName, seconds: number) => void,
  ) {}

  /** Returns true when some plugin handles the hook. */
  handles(hook: HookName): boolean {
    return this.plugins.some((plugin) => typeof plugin.hooks[hook] === "function");
  }

  /** Returns the plugin that registered `route`, if any. */
  routeOwner(route: string): LoadedPlugin | undefined {
    return this.plugins.find((plugin) => plugin.routes.has(route));
  }

  /** Runs one plugin's handler for a hook. */
  async runPlugin<H extends HookName>(
    plugin: LoadedPlugin,
    hook: H,
    args: HookArgs[H],
    logger: Logger,
  ): Promise<HookOutcome> {
    const handler = plugin.hooks[hook] as HookHandler<H> | undefined;
    if (typeof handler !== "function") return { kind: "cont" };

    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    let outcome: HookOutcome;
    try {
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new HookTimeoutError(plugin.name, hook, this.timeout)),
          this.timeout,
        );
      });
      const result = await Promise.race([
        Promise.resolve().then(() => handler(args)),
        deadline,
      ]);
      // A handler that blocked the event loop past the deadline settles
      // before the timer can fire, so its late answer counts as a timeout too.
      if (performance.now() - started > this.timeout) {
        throw new HookTimeoutError(plugin.name, hook, this.timeout);
      }
      if (result === undefined || result === null) {
        outcome = { kind: "cont" };
      } else if (isAnswer(result)) {
        outcome = { kind: "answer", answer: result, plugin: plugin.name };
      } else {
        throw new TypeError(
          `plugin ${plugin.name} returned ${JSON.stringify(result)} from ${hook}; expected undefined or an answer from ok(), deny(), denySoft(), denyDisconnect() or denySoftDisconnect()`,
        );
      }
    } catch (error) {
      logger.error({ err: error, plugin: plugin.name, hook }, "hook failed");
      outcome = { kind: "error", plugin: plugin.name, error };
    } finally {
      clearTimeout(timer);
    }

    const elapsed = performance.now() - started;
    this.observe?.(plugin.name, hook, elapsed / 1000);
    if (logger.isLevelEnabled("debug")) {
      logger.debug(
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

  /** Runs the hook until the first plugin that answers something other than CONT. */
  async run<H extends HookName>(
    hook: H,
    args: HookArgs[H],
    logger: Logger,
  ): Promise<HookOutcome> {
    for (const plugin of this.plugins) {
      const outcome = await this.runPlugin(plugin, hook, args, logger);
      if (outcome.kind !== "cont") return outcome;
    }
    return { kind: "cont" };
  }

  /** Runs the hook in every plugin (reset, disconnect); failures are only logged. */
  async runAll<H extends HookName>(
    hook: H,
    args: HookArgs[H],
    logger: Logger,
  ): Promise<void> {
    for (const plugin of this.plugins) {
      await this.runPlugin(plugin, hook, args, logger);
    }
  }
}
