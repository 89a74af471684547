import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {
  closePlugins,
  configSchema,
  Connection,
  container as rootContainer,
  HookRunner,
  Message,
  parsePath,
  receivedHeader,
  replyFor,
  MemoryBudget,
  SpoolWriter,
  startPlugins,
  storeRoutes,
  TOKENS,
  Transaction,
  wrapHeaders,
  type Address,
  type Answer,
  type Clock,
  type DependencyContainer,
  type DnsResolver,
  type HookArgs,
  type LoadedPlugin,
  type MailroomConfig,
  type PluginDefinition,
  type Reply,
  type SessionHookName,
} from "@mailroom/core";
import { pino } from "pino";

/** The outcome of a hook call, in the terms a test asserts on. */
export interface HookCall {
  /** CONT, OK, DENY, DENYSOFT, DENYDISCONNECT, DENYSOFTDISCONNECT, or ERROR for a throw or timeout. */
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
  /** A Clock, for example a TestClock. */
  clock?: Clock;
  /** A DnsResolver, for example a StaticDnsResolver. */
  dns?: DnsResolver;
  /** Runs before the plugins' setup, to register services such as a UserDirectory. */
  register?: (container: DependencyContainer) => void;
  /** Deadline of each hook call in ms (default 5000). */
  hookTimeout?: number;
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
 * fire and records what the engine would do with the answer: an accepted
 * sender opens the transaction, an accepted recipient joins it.
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

  ehlo(name: string): Promise<HookCall> {
    this.connection.heloName = name;
    return this.harness.call("ehlo", { connection: this.connection, name });
  }

  vrfy(argument: string): Promise<HookCall> {
    return this.harness.call("vrfy", { connection: this.connection, argument });
  }

  /** Fires mail; `sender` is an address or "" for `<>`. */
  async mail(sender: string, params: Record<string, string | true> = {}): Promise<HookCall> {
    const parsed = address(sender, true);
    const transaction = new Transaction(this.connection, parsed, params);
    const call = await this.harness.call("mail", { connection: this.connection, transaction, address: parsed, params });
    if (call.reply === null || call.reply.code < 400) this.transaction = transaction;
    return call;
  }

  /** Fires rcpt in the open transaction (opening one from `<>` when none is open). */
  async rcpt(recipient: string): Promise<HookCall> {
    this.transaction ??= new Transaction(this.connection, null, {});
    const parsed = address(recipient)!;
    const call = await this.harness.call("rcpt", {
      connection: this.connection,
      transaction: this.transaction,
      address: parsed,
      params: {},
    });
    if (call.verdict === "OK") {
      this.transaction.recipients.push({ address: parsed, params: {}, route: call.answer?.route });
    }
    return call;
  }

  /**
   * Fires data, data_post and the queue hook of each route's owner, as the
   * engine does after the final dot. Stops at the first refusal.
   */
  async data(message: string | Buffer): Promise<HookCall> {
    const transaction = this.transaction;
    if (!transaction) throw new Error("data() needs a transaction: call mail() and rcpt() first");
    const start = await this.harness.call("data", { connection: this.connection, transaction });
    if (start.reply) return start;

    const spooled = await this.harness.spool(this.connection, transaction, message);
    transaction.message = spooled;
    const post = await this.harness.call("data_post", { connection: this.connection, transaction, message: spooled });
    if (post.reply) return post;
    return this.harness.queue(this.connection, transaction, spooled);
  }

  /** Fires reset and drops the transaction. */
  async reset(): Promise<void> {
    const transaction = this.transaction;
    this.transaction = undefined;
    await this.harness.runner.runAll("reset", { connection: this.connection, transaction }, this.harness.logger);
  }

  disconnect(): Promise<void> {
    return this.harness.runner.runAll("disconnect", { connection: this.connection }, this.harness.logger);
  }
}

/** Plugins started in-process, with no sockets, ready to have their hooks called. */
export class PluginHarness {
  readonly logger = pino({ level: process.env.MAILROOM_TEST_LOG ?? "silent" });
  private spoolDir: string | undefined;
  private count = 0;

  constructor(
    readonly runner: HookRunner,
    readonly container: DependencyContainer,
    private readonly config: MailroomConfig,
  ) {}

  /** Opens a simulated connection. */
  session(init: ConnectionInit = {}): TestSession {
    return new TestSession(this, init);
  }

  /** Fires one hook through every plugin, as the engine does. */
  async call<H extends SessionHookName>(hook: H, args: HookArgs[H]): Promise<HookCall> {
    const outcome = await this.runner.run(hook, args, this.logger);
    if (outcome.kind === "error") {
      return toCall("ERROR", undefined, replyFor(hook, "ERROR"), outcome.error);
    }
    const answer = outcome.kind === "answer" ? outcome.answer : undefined;
    return toCall(answer?.verdict ?? "CONT", answer, replyFor(hook, answer));
  }

  /** Writes a message to a spool file and returns it as plugins see it. */
  async spool(connection: Connection, transaction: Transaction, message: string | Buffer): Promise<Message> {
    this.spoolDir ??= await mkdtemp(path.join(os.tmpdir(), "mailroom-harness-"));
    const writer = new SpoolWriter({
      dir: this.spoolDir,
      name: `${++this.count}.eml`,
      maxSize: Number.MAX_SAFE_INTEGER,
      maxLineLength: Number.MAX_SAFE_INTEGER,
      lineEndings: "normalize",
      // The server's default: messages up to 128 KiB stay in memory.
      memory: new MemoryBudget(64 * 1024 * 1024, 128 * 1024),
    });
    await writer.write(Buffer.from(message));
    const result = await writer.finish();
    const received = receivedHeader({ connection, transaction, hostname: this.config.server.hostname, utf8: false });
    return new Message(result.body, result.size, wrapHeaders(result.headers), received, transaction.sender);
  }

  /**
   * Calls each route owner's queue hook with its recipients, as the server
   * does: the first refusal wins, and the owners called before it get
   * `accepted` resolved false.
   */
  async queue(connection: Connection, transaction: Transaction, message: Message): Promise<HookCall> {
    const result = await storeRoutes(this.runner, { connection, transaction, message }, this.logger);
    if (result.kind === "stored") return toCall("OK", undefined, replyFor("queue", { verdict: "OK" }));
    const { outcome, route } = result;
    if (!outcome) throw new Error(`no plugin registered route "${route}"`);
    if (outcome.kind === "error") return toCall("ERROR", undefined, replyFor("queue", "ERROR"), outcome.error);
    const answer = outcome.kind === "answer" ? outcome.answer : undefined;
    return toCall(answer?.verdict ?? "CONT", answer, replyFor("queue", answer));
  }

  /** Runs every plugin's close() and removes the spool folder. */
  async close(): Promise<void> {
    for (const plugin of [...this.runner.plugins].reverse()) await plugin.hooks.close?.();
    if (this.spoolDir) await rm(this.spoolDir, { recursive: true, force: true });
  }
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
 * Starts plugins in-process for a unit test: options are validated by each
 * plugin's schema, setup runs with a silent logger and a fresh container,
 * then every plugin's start(), and hooks are called through the engine's
 * own HookRunner and reply table. When a plugin fails, those already set up
 * are closed before the error is thrown.
 */
export async function testPlugins(plugins: PluginWithOptions[], options: HarnessOptions = {}): Promise<PluginHarness> {
  const config = configSchema.parse(options.config ?? {});
  const container = rootContainer.createChildContainer();
  const logger = pino({ level: process.env.MAILROOM_TEST_LOG ?? "silent" });
  container.register(TOKENS.Logger, { useValue: logger });
  container.register(TOKENS.Config, { useValue: config });
  if (options.clock) container.register(TOKENS.Clock, { useValue: options.clock });
  if (options.dns) container.register(TOKENS.DnsResolver, { useValue: options.dns });
  options.register?.(container);

  const loaded: LoadedPlugin[] = [];
  try {
    for (const entry of plugins) {
      const [definition, raw = {}] = Array.isArray(entry) ? entry : [entry];
      const parsed = definition.options ? definition.options.safeParse(raw) : { success: true as const, data: {} };
      if (!parsed.success) {
        const details = parsed.error.issues.map((issue) => `${issue.path.join(".") || "(options)"}: ${issue.message}`);
        throw new Error(`invalid options for plugin ${definition.name}: ${details.join("; ")}`);
      }
      const routes = new Set<string>();
      const hooks = await definition.setup({
        options: parsed.data,
        logger: logger.child({ plugin: definition.name }),
        container,
        config,
        configDir: options.configDir ?? process.cwd(),
        registerRoute: (route) => routes.add(route),
      });
      loaded.push({ name: definition.name, hooks: hooks ?? {}, routes, logger });
    }
    // As the server does once the set is in service.
    await startPlugins(loaded);
  } catch (error) {
    // As the server does with a config it rejects: nothing set up keeps running.
    await closePlugins(loaded, logger);
    throw error;
  }
  return new PluginHarness(new HookRunner(loaded, options.hookTimeout ?? 5000), container, config);
}

/** Starts one plugin in-process; shorthand for `testPlugins([[plugin, options]])`. */
export function testPlugin(
  plugin: PluginDefinition,
  options: Record<string, unknown> = {},
  harness: HarnessOptions = {},
): Promise<PluginHarness> {
  return testPlugins([[plugin, options]], harness);
}
