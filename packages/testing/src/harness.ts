import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import {
  checkRouteOwners,
  closePlugins,
  configSchema,
  Connection,
  container as rootContainer,
  createInjector,
  Dns2Resolver,
  HookRunner,
  MemoryBudget,
  parseNameServer,
  parsePath,
  replyForOutcome,
  runDataHook,
  runRcpt,
  setupPlugin,
  startPlugins,
  storeMessage,
  systemClock,
  TOKENS,
  Transaction,
  type Address,
  type Answer,
  type Clock,
  type DataResult,
  type DependencyContainer,
  type DnsResolver,
  type HookArgs,
  type HookOutcome,
  type HookService,
  type LoadedPlugin,
  type MailroomConfig,
  type PluginDefinition,
  type Reply,
  type SessionHookName,
} from "@mailroom/core";
import { pino, type Logger } from "pino";
import { NoDnsResolver } from "./fakes.js";

/** The outcome of a hook call, in the terms a test asserts on. */
export interface HookCall {
  /**
   * What the plugins answered: CONT (no plugin answered), OK, DENY,
   * DENYSOFT, DENYDISCONNECT, DENYSOFTDISCONNECT, or ERROR for a throw or
   * timeout. The reply follows the engine's rules, so it can differ: an OK
   * at rcpt on a route that no plugin registered gets 451, and a reply that
   * the engine sends on its own (too many recipients, no recipient at DATA,
   * a bare line ending in strict mode) comes with CONT.
   */
  verdict: Answer["verdict"] | "CONT" | "ERROR";
  /** The plugin's answer, when it gave one. */
  answer: Answer | undefined;
  /** The reply the engine would send, or null where the session goes on. */
  reply: Reply | null;
  /** Shortcuts for `reply.code`, `reply.enhanced` and `reply.message`. */
  code: number | undefined;
  enhanced: string | undefined;
  message: string | undefined;
  /** The error, for verdict ERROR. */
  error?: unknown;
}

export interface HarnessOptions {
  /** Folder that relative option paths resolve against (default: the working folder). */
  configDir?: string;
  /** Extra config, in the config file's shape (for plugins that read `ctx.config`). */
  config?: Record<string, unknown>;
  /** A Clock, for example a TestClock; the system clock by default. */
  clock?: Clock;
  /**
   * A DnsResolver, for example a StaticDnsResolver. Without one, the kit
   * queries the name servers of `config.server.dns.nameservers` when the
   * test sets them. Otherwise every lookup fails with an error that tells
   * the author what to pass, so a unit test never queries the system's
   * resolver.
   */
  dns?: DnsResolver;
  /** Runs before the plugins' setup, to register services such as a UserDirectory. */
  register?: (container: DependencyContainer) => void;
  /**
   * Deadline of each hook call in ms. The default is the `server.hookTimeout`
   * of `config` when the test sets one, and 5000 otherwise.
   */
  hookTimeout?: number;
  /**
   * The logger that the plugins and the engine code get, for example the
   * one of captureLogs(), so a test can read a plugin's log lines. Silent by
   * default (set MAILROOM_TEST_LOG=debug to see the logs).
   */
  logger?: Logger;
}

export interface ConnectionInit {
  remoteAddress?: string;
  remotePort?: number;
  tls?: boolean;
  /** Authenticated user name. */
  user?: string;
  heloName?: string;
}

/** Parses an address as the engine does at MAIL and RCPT; "" is the null sender. */
export function address(text: string, sender = false): Address | null {
  const path = text.startsWith("<") ? text.slice(1, -1) : text;
  const parsed = parsePath(path, { sender, utf8: true });
  if (parsed && "error" in parsed) throw new Error(`invalid address "${text}": ${parsed.error}`);
  return parsed;
}

/**
 * One simulated SMTP session. Each method fires the hook the command would
 * fire and applies the engine's own rules to the answer: an accepted sender
 * opens the transaction, an accepted recipient joins it on its route, and
 * data() stores the message through the engine's DATA code.
 */
export class TestSession {
  readonly connection: Connection;
  transaction: Transaction | undefined;

  constructor(private readonly harness: PluginHarness, init: ConnectionInit) {
    this.connection = new Connection({
      remoteAddress: init.remoteAddress ?? "192.0.2.10",
      remotePort: init.remotePort ?? 40000,
      localAddress: "127.0.0.1",
      localPort: 25,
      secure: init.tls ?? false,
      logger: harness.logger,
    });
    this.connection.user = init.user;
    this.connection.heloName = init.heloName ?? "client.example";
    this.connection.heloVerb = "EHLO";
  }

  connect(): Promise<HookCall> {
    return this.harness.call("connect", { connection: this.connection });
  }

  /** Fires ehlo. When no plugin answers, the engine's EHLO reply ends an open transaction with reset. */
  async ehlo(name: string): Promise<HookCall> {
    const call = await this.harness.call("ehlo", { connection: this.connection, name });
    if (call.reply === null) {
      await this.endTransaction();
      this.connection.heloName = name;
    }
    return call;
  }

  vrfy(argument: string): Promise<HookCall> {
    return this.harness.call("vrfy", { connection: this.connection, argument });
  }

  /**
   * Fires mail; `sender` is an address or "" for `<>`. An accepted sender
   * opens a new transaction. A transaction that is still open ends first
   * with the reset hook, as after reset(). The engine would reply 503 to
   * such a nested MAIL instead.
   */
  async mail(sender: string, params: Record<string, string | true> = {}): Promise<HookCall> {
    const parsed = address(sender, true);
    await this.endTransaction();
    const transaction = new Transaction(this.connection, parsed, params);
    const call = await this.harness.call("mail", { connection: this.connection, transaction, address: parsed, params });
    // A rejected sender opens no transaction, so a test cannot read the previous one by mistake.
    this.transaction = undefined;
    if (call.reply === null || call.reply.code < 400) {
      this.transaction = transaction;
      this.connection.transaction = transaction;
    }
    return call;
  }

  /**
   * Fires rcpt in the open transaction (opening one from `<>` when none is
   * open). As in the engine, a recipient accepted with OK joins the
   * transaction on the route the answer names, or on the first route the
   * accepting plugin registered. A route that no plugin registered gets
   * 451 4.3.0, and `server.limits.maxRecipients` applies.
   */
  async rcpt(recipient: string, params: Record<string, string | true> = {}): Promise<HookCall> {
    let transaction = this.connection.transaction;
    if (!transaction) {
      transaction = new Transaction(this.connection, null, {});
      this.transaction = transaction;
      this.connection.transaction = transaction;
    }
    const parsed = address(recipient);
    if (!parsed) throw new Error("rcpt() needs a recipient address; <> is only a sender");
    const result = await runRcpt({
      runner: this.harness.runner,
      connection: this.connection,
      transaction,
      address: parsed,
      params,
      maxRecipients: this.harness.config.server.limits.maxRecipients,
    });
    return callFor(result.outcome, result.reply);
  }

  /**
   * Fires data, then stores `message` as the engine stores the bytes after
   * DATA: the checks of `server.limits` and `server.lineEndings`, data_post,
   * and the queue hook of each route's owner. Without an accepted
   * recipient the reply is 554 5.5.1 and no hook fires. The message is the
   * DATA content without dot-stuffing or the final dot.
   *
   * As in the engine, the transaction ends once the message got its reply,
   * and reset fires. It stays in `transaction` for the test to read until
   * the next mail() or rcpt().
   */
  async data(message: string | Buffer): Promise<HookCall> {
    const transaction = this.connection.transaction;
    if (!transaction) throw new Error("data() needs an open transaction: call mail() and rcpt() first");
    const context = { connection: this.connection, transaction, runner: this.harness.runner };
    const start = await runDataHook(context);
    if (start.reply) return callFor(start.outcome, start.reply);

    const result = await storeMessage(
      {
        ...context,
        config: this.harness.config.server,
        spoolDir: this.harness.spoolDir,
        memory: this.harness.memory,
        utf8: transaction.senderParams.SMTPUTF8 === true,
      },
      () => Readable.from([Buffer.from(message)], { objectMode: false }),
    );
    this.connection.transactionCount += 1;
    await this.endTransaction();
    return callForData(result);
  }

  /** Ends the open transaction and fires reset, as RSET does. With no transaction open, no hook fires. */
  async reset(): Promise<void> {
    this.transaction = undefined;
    await this.endTransaction();
  }

  private async endTransaction(): Promise<void> {
    const transaction = this.connection.transaction;
    if (!transaction) return;
    this.connection.transaction = undefined;
    await this.harness.runner.runAll("reset", { connection: this.connection, transaction }, this.harness.logger);
  }

  /** Ends an open transaction with reset, as the engine does when a connection closes, then fires disconnect. */
  async disconnect(): Promise<void> {
    await this.endTransaction();
    await this.harness.runner.runAll("disconnect", { connection: this.connection }, this.harness.logger);
  }
}

/** Plugins started in-process, with no sockets, ready to have their hooks called. */
export class PluginHarness {
  readonly logger: Logger;

  constructor(
    readonly runner: HookRunner,
    readonly container: DependencyContainer,
    readonly config: MailroomConfig,
    /** The folder where messages too large for `memory` are spooled; removed by close(). */
    readonly spoolDir: string,
    /** The memory budget of messages in transit, from `server.memorySpool`. */
    readonly memory: MemoryBudget,
    logger: Logger,
  ) {
    this.logger = logger;
  }

  /** Opens a simulated connection. */
  session(init: ConnectionInit = {}): TestSession {
    return new TestSession(this, init);
  }

  /** Fires one hook through every plugin, as the engine does. */
  async call<H extends SessionHookName>(hook: H, args: HookArgs[H]): Promise<HookCall> {
    const outcome = await this.runner.run(hook, args, this.logger);
    return callFor(outcome, replyForOutcome(hook, outcome));
  }

  /**
   * Runs every plugin's close() in reverse order, as the server does, and
   * removes the spool folder. A close() that throws is logged and the
   * others still run.
   */
  async close(): Promise<void> {
    await closePlugins(this.runner.plugins, this.logger);
    await rm(this.spoolDir, { recursive: true, force: true });
  }
}

/** Describes a hook's outcome and the reply the engine sends for it. */
function callFor(outcome: HookOutcome | undefined, reply: Reply | null): HookCall {
  if (!outcome || outcome.kind === "cont") return toCall("CONT", undefined, reply);
  if (outcome.kind === "error") return toCall("ERROR", undefined, reply, outcome.error);
  return toCall(outcome.answer.verdict, outcome.answer, reply);
}

/** Describes the end of DATA: the refusing hook's outcome, or OK when every route stored the message. */
function callForData(result: DataResult): HookCall {
  if (result.hook !== "queue" || result.outcome) return callFor(result.outcome, result.reply);
  if (result.reply.code < 300) return toCall("OK", undefined, result.reply);
  // A recipient whose route no plugin owns; rcpt() never adds one, so the test put it there.
  return toCall("ERROR", undefined, result.reply, new Error(`no plugin registered route "${result.route ?? ""}"`));
}

function toCall(verdict: HookCall["verdict"], answer: Answer | undefined, reply: Reply | null, error?: unknown): HookCall {
  return {
    verdict,
    answer,
    reply,
    code: reply?.code,
    enhanced: reply?.enhanced,
    message: reply?.message,
    ...(error === undefined ? {} : { error }),
  };
}

type PluginWithOptions = PluginDefinition | [PluginDefinition, Record<string, unknown>?];

/**
 * Registers the services that the server registers for every plugin set:
 * Logger, Config, Clock, DnsResolver, Hooks and Injector. `runner` returns
 * the plugins' HookRunner once their setup has finished.
 */
function registerServices(
  container: DependencyContainer,
  config: MailroomConfig,
  logger: Logger,
  options: HarnessOptions,
  spool: { dir: string; memory: MemoryBudget },
  runner: () => HookRunner,
): void {
  container.register(TOKENS.Logger, { useValue: logger });
  container.register(TOKENS.Config, { useValue: config });
  container.register(TOKENS.Clock, { useValue: options.clock ?? systemClock });
  container.register(TOKENS.DnsResolver, { useValue: options.dns ?? defaultResolver(config) });
  const hooks: HookService = {
    run: (hook, args, hookLogger) => runner().run(hook, args, hookLogger),
    runAll: (hook, args, hookLogger) => runner().runAll(hook, args, hookLogger),
  };
  container.register(TOKENS.Hooks, { useValue: hooks });
  container.register(TOKENS.Injector, {
    useValue: createInjector({ runner, config: () => config.server, spoolDir: spool.dir, memory: spool.memory, logger }),
  });
}

/** Returns a resolver on the name servers of `server.dns` when the test set them, or else a NoDnsResolver. */
function defaultResolver(config: MailroomConfig): DnsResolver {
  const { nameservers, timeout } = config.server.dns;
  if (nameservers.length === 0) return new NoDnsResolver();
  return new Dns2Resolver({ nameservers: nameservers.map(parseNameServer), timeout });
}

/**
 * Returns the deadline of each hook call in ms: `options.hookTimeout`, else
 * the `server.hookTimeout` that the test's config sets, else 5000.
 */
function hookDeadline(options: HarnessOptions, config: MailroomConfig): number {
  if (options.hookTimeout !== undefined) return options.hookTimeout;
  const server = options.config?.server as Record<string, unknown> | undefined;
  return server?.hookTimeout === undefined ? 5000 : config.server.hookTimeout;
}

/**
 * Starts plugins in-process for a unit test. Each plugin is set up by the
 * server's setupPlugin, with `options.logger` or a silent one, and a fresh container holding
 * the server's services, then every plugin's start() runs. Hooks are called
 * through the engine's own HookRunner, rcpt and DATA code. When a plugin
 * fails, those already set up are closed before the error is thrown.
 */
export async function testPlugins(plugins: PluginWithOptions[], options: HarnessOptions = {}): Promise<PluginHarness> {
  const config = configSchema.parse(options.config ?? {});
  const container = rootContainer.createChildContainer();
  const logger = options.logger ?? pino({ level: process.env.MAILROOM_TEST_LOG ?? "silent" });
  const spoolDir = await mkdtemp(path.join(os.tmpdir(), "mailroom-harness-"));
  const memory = new MemoryBudget(config.server.memorySpool.total, config.server.memorySpool.perMessage);
  let runner: HookRunner | undefined;
  const currentRunner = () => {
    if (!runner) throw new Error("plugin hooks cannot run before every plugin's setup has finished");
    return runner;
  };
  registerServices(container, config, logger, options, { dir: spoolDir, memory }, currentRunner);
  options.register?.(container);

  const loaded: LoadedPlugin[] = [];
  const environment = { container, logger, config, configDir: options.configDir ?? process.cwd() };
  try {
    for (const entry of plugins) {
      const [definition, rawOptions = {}] = Array.isArray(entry) ? entry : [entry];
      loaded.push(await setupPlugin(definition, rawOptions, environment));
    }
    checkRouteOwners(loaded);
    runner = new HookRunner(loaded, hookDeadline(options, config));
    // As the server does once the set is in service.
    await startPlugins(loaded, config.server.setupTimeout);
  } catch (error) {
    // As the server does with a config it rejects: nothing set up keeps running.
    await closePlugins(loaded, logger);
    await rm(spoolDir, { recursive: true, force: true });
    throw error;
  }
  return new PluginHarness(runner, container, config, spoolDir, memory, logger);
}

/** Starts one plugin in-process; shorthand for `testPlugins([[plugin, options]])`. */
export function testPlugin(
  plugin: PluginDefinition,
  options: Record<string, unknown> = {},
  harness: HarnessOptions = {},
): Promise<PluginHarness> {
  return testPlugins([[plugin, options]], harness);
}
