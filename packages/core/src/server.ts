import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { pino, type Logger } from "pino";
import type { SMTPServer } from "smtp-server";
import { container as rootContainer, type DependencyContainer } from "tsyringe";
import { loadConfig, parseConfig, type LoadedConfig } from "./config/load.js";
import { listenerWarnings } from "./config/listener-warnings.js";
import { loadTlsFiles, type TlsFiles } from "./config/tls-files.js";
import { tlsWarnings } from "./config/tls-warnings.js";
import { parseHostPort, type ListenerConfig, type MailroomConfig } from "./config/schema.js";
import { MAX_TIMER_MS } from "./config/units.js";
import { logSerializers } from "./logging.js";
import { MemoryBudget } from "./message/spool.js";
import { metricsTarget, ServerMetrics, serveMetrics } from "./metrics.js";
import { removeLeftovers } from "./process-alive.js";
import { reverseLookup } from "./reverse-dns.js";
import { closePlugins, loadPlugins, startPlugins } from "./plugins/loader.js";
import { HookRunner, type LoadedPlugin } from "./plugins/runner.js";
import type { Reply } from "./replies.js";
import { Dns2Resolver, parseNameServer, type DnsResolver } from "./services/dns.js";
import { systemClock, TOKENS } from "./services/tokens.js";
import { Session } from "./session.js";
import { createListener, type Wire, type WireReply } from "./smtp/adapter.js";
import { createInjector } from "./inject.js";
import type { HookService } from "./services/tokens.js";

/** One generation of plugins; replaced on reload while old sessions finish on it. */
interface PluginSet {
  plugins: LoadedPlugin[];
  runner: HookRunner;
  loaded: LoadedConfig;
  /** A child of the server's container with the services this set's plugins registered. */
  container: DependencyContainer;
  sessions: number;
  retired: boolean;
}

export interface ServerOptions {
  /** A pino logger; by default one is made at the config's log level. */
  logger?: Logger;
  /** Replaces `server.listen` (the CLI's --listen). */
  listen?: string[];
  /** A parent container, for tests that provide their own services. */
  container?: DependencyContainer;
  /**
   * Added to the port of `server.metrics.listen`, unless that port is 0, so
   * that each worker of `server.workers` has a metrics port of its own.
   */
  metricsPortOffset?: number;
}

/**
 * How long after `server.shutdownTimeout` close() waits for the sessions'
 * last hooks (the disconnect hooks, a hook that was running at the
 * deadline) before it closes the plugins anyway, and smtp-server drops
 * connections that are still open.
 */
const SHUTDOWN_BACKSTOP_MS = 5000;

/** The address a listener is bound to. */
export interface BoundAddress {
  host: string;
  port: number;
  implicitTls: boolean;
}

/** Reads and checks the configured key and certificate files; a bad one is a config error with its line. */
function readTls(loaded: LoadedConfig): TlsFiles | undefined {
  return loadTlsFiles(loaded);
}

/**
 * A Mailroom server: the listeners, the DI container and the current plugin
 * set. Build one with `MailroomServer.fromFile()` or `fromText()`, then
 * `listen()`.
 */
export class MailroomServer {
  readonly logger: Logger;
  /** The server's own services (Logger, Clock, DnsResolver, Hooks, Injector), shared by every plugin set. */
  private readonly base: DependencyContainer;
  private current: PluginSet;
  private readonly listeners: { server: SMTPServer; config: ListenerConfig; bound?: BoundAddress }[] = [];
  private readonly perIp = new Map<string, number>();
  private readonly sessions = new Set<Session>();
  private readonly liveSets = new Set<PluginSet>();
  private connections = 0;
  private readonly spoolDir: string;
  private readonly ownsSpoolDir: boolean;
  /** Memory for messages being received, shared by all sessions. */
  private readonly memory: MemoryBudget;
  private tls: ReturnType<typeof readTls>;
  /** True once listen() has started the current set. A reload starts its new set only then. */
  private serving = false;
  private closing = false;
  /** The promise of the first close(). */
  private stopped: Promise<void> | undefined;
  /** Called by the session that ends last while the server is stopping. */
  private sessionsGone: (() => void) | undefined;
  /** Plugin sets whose close() runs, so that close() can wait for them. */
  private readonly retiring = new Set<Promise<void>>();
  /**
   * Settles when the last requested reload, or the start of the first set
   * by listen(), has finished. The next one starts after it.
   */
  private reloadTail: Promise<void> = Promise.resolve();
  /** A reload that waits for the running one and has not read the config yet. */
  private reloadWaiting: Promise<void> | undefined;
  private metricsServer: import("node:http").Server | undefined;
  /** The settings of the first config that a reload cannot change, for the warning when one does. */
  private readonly restartOnly: { metrics: string | undefined; workers: number };

  private constructor(
    set: PluginSet,
    base: DependencyContainer,
    logger: Logger,
    private readonly listenOverride: string[] | undefined,
    readonly metrics: ServerMetrics,
    private readonly metricsPortOffset = 0,
  ) {
    this.current = set;
    this.liveSets.add(set);
    this.restartOnly = { metrics: set.loaded.config.server.metrics?.listen, workers: set.loaded.config.server.workers };
    this.base = base;
    this.logger = logger;
    this.tls = readTls(set.loaded);
    // Relative to the config file, like the other paths in it.
    const configured = configuredSpoolDir(set.loaded);
    this.spoolDir = configured ?? defaultSpoolDir();
    if (configured) prepareSpoolDir(configured);
    this.ownsSpoolDir = !configured;
    const memorySpool = set.loaded.config.server.memorySpool;
    this.memory = new MemoryBudget(memorySpool.total, memorySpool.perMessage);
    // Services that need the live plugin set; plugins resolve them when they use them.
    const hooks: HookService = {
      run: (hook, args, hookLogger) => this.current.runner.run(hook, args, hookLogger),
      runAll: (hook, args, hookLogger) => this.current.runner.runAll(hook, args, hookLogger),
    };
    base.register(TOKENS.Hooks, { useValue: hooks });
    base.register(TOKENS.Injector, {
      useValue: createInjector({
        runner: () => this.current.runner,
        config: () => this.current.loaded.config.server,
        spoolDir: this.spoolDir,
        memory: this.memory,
        logger,
      }),
    });
  }

  /** Loads the config file, registers the services and sets up every plugin. */
  static async fromFile(file: string, options: ServerOptions = {}): Promise<MailroomServer> {
    return MailroomServer.create(await loadConfig(file), options);
  }

  /** Same as fromFile for config text; relative paths resolve against `dir`. */
  static async fromText(text: string, dir: string, options: ServerOptions = {}): Promise<MailroomServer> {
    return MailroomServer.create(parseConfig(text, path.join(dir, "<inline>.yaml"), dir), options);
  }

  static async create(loaded: LoadedConfig, options: ServerOptions = {}): Promise<MailroomServer> {
    const logger = options.logger ?? pino({ level: loaded.config.server.logLevel, serializers: logSerializers });
    const container = (options.container ?? rootContainer).createChildContainer();
    registerServices(container, loaded, logger);
    let server: MailroomServer | undefined;
    // The queue gauges read the services of the set in service when scraped.
    const metrics = new ServerMetrics(() => server?.container);
    const set = await MailroomServer.loadSet(loaded, container, logger, metrics);
    try {
      server = new MailroomServer(set, container, logger, options.listen, metrics, options.metricsPortOffset);
    } catch (error) {
      await closePlugins(set.plugins, logger);
      throw error;
    }
    return server;
  }

  /**
   * Sets up the plugins of a config in a container of their own, a child of
   * the server's. Their start() waits until the set goes into service. When
   * an entry fails, the plugins already set up are closed, and the
   * container, with whatever they registered, is dropped.
   */
  private static async loadSet(
    loaded: LoadedConfig,
    base: DependencyContainer,
    logger: Logger,
    metrics: ServerMetrics,
  ): Promise<PluginSet> {
    const container = base.createChildContainer();
    container.register(TOKENS.Config, { useValue: loaded.config });
    const plugins = await loadPlugins(loaded, container, logger);
    const observe = metrics.hook.bind(metrics);
    return {
      plugins,
      runner: new HookRunner(plugins, loaded.config.server.hookTimeout, observe),
      loaded,
      container,
      sessions: 0,
      retired: false,
    };
  }

  /**
   * The services of the plugin set in service: a child of the server's
   * container, with what the current plugins registered (UserDirectory,
   * OutboundQueue). A reload replaces it; sessions opened before keep
   * theirs. To provide a service to every set, register it in the parent
   * container of `ServerOptions.container`.
   */
  get container(): DependencyContainer {
    return this.current.container;
  }

  get config(): MailroomConfig {
    return this.current.loaded.config;
  }

  /** Returns the plugins of the current set, in order. */
  get plugins(): readonly LoadedPlugin[] {
    return this.current.plugins;
  }

  private admit(remoteAddress: string): Reply | null {
    const limits = this.config.server.limits;
    if (this.closing) {
      return { code: 421, enhanced: "4.3.2", message: "Server shutting down", close: true };
    }
    const fromIp = this.perIp.get(remoteAddress) ?? 0;
    if (this.connections >= limits.maxConnections) {
      return { code: 421, enhanced: "4.7.0", message: "Too many connections, try again later", close: true };
    }
    if (fromIp >= limits.maxConnectionsPerIp) {
      return { code: 421, enhanced: "4.7.0", message: "Too many connections from your address", close: true };
    }
    this.connections += 1;
    this.perIp.set(remoteAddress, fromIp + 1);
    return null;
  }

  private release(remoteAddress: string): void {
    this.connections -= 1;
    const fromIp = (this.perIp.get(remoteAddress) ?? 1) - 1;
    if (fromIp <= 0) this.perIp.delete(remoteAddress);
    else this.perIp.set(remoteAddress, fromIp);
  }

  /**
   * Creates the SMTP listener of one `server.listen` entry. While
   * `state.binding` is true, its errors are left to listen(), which rejects
   * with a bind failure such as EADDRINUSE, so that it is not also logged
   * as a connection error.
   */
  private createListener(config: ListenerConfig, state: { binding: boolean }): SMTPServer {
    const server = this.config.server;
    return createListener({
      hostname: server.hostname,
      greeting: () => greetingText(this.config.server),
      implicitTls: config.implicitTls,
      ...(this.tls ? { tls: this.tls } : {}),
      proxyProtocol: server.proxyProtocol,
      idleTimeout: server.limits.idleTimeout,
      maxLineLength: Math.max(server.limits.maxAuthLineLength, server.limits.maxCommandLength),
      maxDiscard: 64 * 1024,
      onError: (error) => {
        if (!state.binding) this.logger.warn({ err: error }, "connection error");
      },
      onProxyHeaderRejected: (peer, failure) => {
        // A load balancer's TCP health check connects and hangs up without
        // a header, and logged at warn it would fill the log.
        const level = failure.peerLeft ? "debug" : "warn";
        this.logger[level](
          { proxy: peer.remoteAddress, port: peer.remotePort, reason: failure.reason, received: failure.received },
          "PROXY header missing or invalid; connection closed",
        );
      },
      reserveHandshake: (remoteAddress) => {
        const refusal = this.admit(remoteAddress);
        if (refusal) {
          this.metrics.connectionOpened(false);
          this.logger.info({ remote: remoteAddress, code: refusal.code }, "connection refused by limit before the TLS handshake");
          return undefined;
        }
        let held = true;
        return () => {
          if (!held) return;
          held = false;
          this.release(remoteAddress);
        };
      },
      createSession: (socketWire, info) => {
        const wire = this.countReplies(socketWire);
        const set = this.current;
        set.sessions += 1;
        let admitted = false;
        const session = new Session(wire, info, {
          config: set.loaded.config.server,
          listener: config,
          runner: set.runner,
          logger: this.logger,
          tlsAvailable: this.tls !== undefined,
          spoolDir: this.spoolDir,
          memory: this.memory,
          admit: (remote) => {
            const refusal = this.admit(remote);
            admitted = refusal === null;
            this.metrics.connectionOpened(admitted);
            return refusal;
          },
          release: (remote) => {
            if (!admitted) return;
            admitted = false;
            this.release(remote);
            this.metrics.connectionClosed();
          },
          ended: () => {
            this.sessions.delete(session);
            set.sessions -= 1;
            if (set.retired && set.sessions === 0) void this.retire(set);
            if (this.sessions.size === 0) this.sessionsGone?.();
          },
        });
        this.sessions.add(session);
        const reverseDns = set.loaded.config.server.reverseDns;
        if (reverseDns.enabled) {
          // The client's name is looked up before the connect hook, so plugins can use it.
          const ready = session.ready.bind(session);
          session.ready = async () => {
            const resolver = set.container.resolve<DnsResolver>(TOKENS.DnsResolver);
            const connection = session.connection;
            connection.remoteHostname = await reverseLookup(resolver, connection.remoteAddress, reverseDns.timeout, connection.logger);
            return ready();
          };
        }
        return session;
      },
    });
  }

  /** Wraps a connection's wire to count replies, and transactions by the reply after DATA. */
  private countReplies(socketWire: Wire): Wire {
    return new CountingWire(socketWire, this.metrics);
  }

  /**
   * Starts the plugins' background work (their start()), then every
   * listener; resolves with the bound addresses (port 0 gets a real port).
   */
  async listen(): Promise<BoundAddress[]> {
    await this.startServing();
    if (this.closing) throw new Error("the server is stopping, so it did not start listening");
    const configs: ListenerConfig[] = this.listenOverride
      ? this.listenOverride.map((address) => ({ address, implicitTls: false, requireAuth: false }))
      : this.config.server.listen;

    for (const config of configs) {
      const target = parseHostPort(config.address);
      if (!target) throw new Error(`invalid listen address ${config.address}; expected host:port`);
      if (config.implicitTls && !this.tls) {
        throw new Error(`listen ${config.address} has implicitTls but server.tls is not configured`);
      }
      const state = { binding: true };
      const server = this.createListener(config, state);
      const bound = await new Promise<BoundAddress>((resolve, reject) => {
        server.server.once("error", reject);
        server.listen({ host: target.host, port: target.port }, () => {
          server.server.off("error", reject);
          const address = server.server.address() as AddressInfo;
          resolve({ host: address.address, port: address.port, implicitTls: config.implicitTls });
        });
      }).finally(() => {
        state.binding = false;
      });
      this.listeners.push({ server, config, bound });
      this.logger.info({ host: bound.host, port: bound.port, implicitTls: bound.implicitTls }, "listening");
    }
    for (const warning of listenerWarnings(this.config.server, configs, this.current.runner.handles("auth"))) {
      this.logger.warn({ address: warning.address }, warning.message);
    }
    this.logTlsWarnings();
    const metrics = this.config.server.metrics;
    if (metrics) {
      const target = metricsTarget(metrics.listen, this.metricsPortOffset);
      const served = await serveMetrics(this.metrics, target, this.logger);
      this.metricsServer = served.server;
      this.metricsAddress = { host: served.address.address, port: served.address.port };
    }
    return this.addresses();
  }

  /**
   * Runs the start() of the set in service, once, in the queue of reloads:
   * a reload asked for while it runs waits for it, then starts its own set
   * before the first one is retired. A reload that ran before this swapped
   * the set without starting it, so the set started here is its.
   */
  private startServing(): Promise<void> {
    const run = this.reloadTail.then(async () => {
      if (this.serving || this.closing) return;
      await startPlugins(this.current.plugins, this.current.loaded.config.server.setupTimeout);
      this.serving = true;
    });
    this.reloadTail = run.catch(() => undefined);
    return run;
  }

  /** Address of the metrics endpoint, when `server.metrics` is set and listening. */
  metricsAddress: { host: string; port: number } | undefined;

  addresses(): BoundAddress[] {
    return this.listeners.flatMap((listener) => (listener.bound ? [listener.bound] : []));
  }

  /**
   * Re-reads the config file and swaps in a new plugin set. Sessions already
   * open finish on the old set, whose plugins are closed when the last one
   * ends. An invalid config throws and changes nothing: the new plugins
   * that were set up are closed, their container is dropped, and their
   * start() never runs. Reloads run one at a time, in the order requested,
   * and after the start of the first set by listen() when they were asked
   * for while it runs.
   * A call made while another reload waits for its turn gets that reload's
   * promise, because both would read the same file.
   */
  reload(): Promise<void> {
    if (this.closing) return Promise.reject(new Error("the server is stopping, so the config was not reloaded"));
    if (this.reloadWaiting) return this.reloadWaiting;
    const run = this.reloadTail.then(() => {
      this.reloadWaiting = undefined;
      return this.reloadNow();
    });
    this.reloadWaiting = run;
    this.reloadTail = run.catch(() => undefined);
    return run;
  }

  private async reloadNow(): Promise<void> {
    if (this.closing) throw new Error("the server is stopping, so the config was not reloaded");
    const file = this.current.loaded.file;
    const loaded = await loadConfig(file);
    const tls = readTls(loaded);
    const implicit = this.listeners.find((listener) => listener.config.implicitTls);
    if (!tls && implicit) {
      throw new Error(`${file}: server.tls is required while the implicitTls listener ${implicit.config.address} runs`);
    }
    const next = await MailroomServer.loadSet(loaded, this.base, this.logger, this.metrics);
    try {
      if (this.closing) throw new Error("the server stopped while the config was reloading, so the new plugins were closed");
      if (this.serving) await startPlugins(next.plugins, loaded.config.server.setupTimeout);
      if (tls) {
        for (const listener of this.listeners) {
          // The SNI map is replaced whole, so a name removed from the config is gone too.
          listener.server.updateSecureContext({
            key: tls.key,
            cert: tls.cert,
            sniOptions: Object.fromEntries(tls.sni),
          });
        }
      }
    } catch (error) {
      // The new plugins never take a session, so they are closed again.
      await closePlugins(next.plugins, this.logger);
      throw error;
    }
    const previous = this.current;
    this.current = next;
    const listening = previous.loaded.config.server.listen;
    const configured = loaded.config.server.listen;
    if (!this.listenOverride && JSON.stringify(configured) !== JSON.stringify(listening)) {
      this.logger.warn(
        { listening: listening.map((listener) => listener.address), configured: configured.map((listener) => listener.address) },
        "server.listen changed; the server keeps its listeners until it is restarted",
      );
    }
    if ((configuredSpoolDir(loaded) ?? this.spoolDir) !== this.spoolDir) {
      this.logger.warn(
        { spoolDir: this.spoolDir, configured: configuredSpoolDir(loaded) ?? "(system temp folder)" },
        "server.spoolDir changed; the server keeps using the old folder until it is restarted",
      );
    }
    this.warnRestartOnly(loaded);
    this.memory.total = next.loaded.config.server.memorySpool.total;
    this.memory.perMessage = next.loaded.config.server.memorySpool.perMessage;
    this.liveSets.add(next);
    this.tls = tls;
    previous.retired = true;
    if (previous.sessions === 0) await this.retire(previous);
    this.logTlsWarnings();
    this.logger.info({ file, plugins: next.plugins.map((plugin) => plugin.name) }, "config reloaded");
  }

  /** Logs the warnings about the current config's TLS files, which `mailroom check` prints with the same text. */
  private logTlsWarnings(): void {
    for (const warning of tlsWarnings(this.config.server)) {
      this.logger.warn({ option: warning.option, file: warning.file, ...warning.details }, warning.message);
    }
  }

  /**
   * Logs a warning for `server.metrics` and `server.workers` when a reload
   * changes them. The metrics endpoint is bound once in listen(), and the
   * primary process forks its workers once, so both keep the first value.
   */
  private warnRestartOnly(loaded: LoadedConfig): void {
    const metrics = loaded.config.server.metrics?.listen;
    if (metrics !== this.restartOnly.metrics) {
      this.logger.warn(
        { serving: this.restartOnly.metrics ?? "(none)", configured: metrics ?? "(none)" },
        "server.metrics changed; the metrics endpoint keeps its address until the server is restarted",
      );
    }
    const workers = loaded.config.server.workers;
    if (workers !== this.restartOnly.workers) {
      this.logger.warn(
        { running: this.restartOnly.workers, configured: workers },
        "server.workers changed; the number of worker processes changes only at a restart",
      );
    }
  }

  private retire(set: PluginSet): Promise<void> {
    if (!this.liveSets.delete(set)) return Promise.resolve();
    const closing = closePlugins(set.plugins, this.logger).finally(() => this.retiring.delete(closing));
    this.retiring.add(closing);
    return closing;
  }

  /**
   * Stops accepting connections and closes idle sessions. Sessions with a
   * transaction in progress may finish it within `server.shutdownTimeout`,
   * and after that the rest are closed with 421 and logged; a message in
   * DATA is rejected before its client reads the 421. Then, once every
   * session ended (its disconnect hooks and any hook still running for it
   * finished), the plugins close. Sessions that have not ended 5 seconds
   * past the deadline are logged and left behind. Calls after the first get
   * its promise.
   */
  close(): Promise<void> {
    return (this.stopped ??= this.stop());
  }

  private async stop(): Promise<void> {
    this.closing = true;
    const timeout = this.config.server.shutdownTimeout;
    const backstop = Math.min(timeout + SHUTDOWN_BACKSTOP_MS, MAX_TIMER_MS);
    for (const session of this.sessions) session.shutdown();
    const deadline = setTimeout(() => {
      for (const session of this.sessions) session.shutdownTimedOut();
    }, timeout);
    const listenersClosed = Promise.all(
      this.listeners.map(
        (listener) =>
          new Promise<void>((resolve) => {
            // smtp-server's own deadline only backs up the one above, for a
            // socket that stays open after its session was closed.
            listener.server.options.closeTimeout = backstop;
            listener.server.close(() => resolve());
          }),
      ),
    );
    // Hooks go on after a client left, so the sessions, not the sockets, tell when the plugins are free.
    const sessionsEnded = listenersClosed.then(() =>
      this.sessions.size === 0 ? undefined : new Promise<void>((resolve) => (this.sessionsGone = resolve)),
    );
    let giveUp: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      sessionsEnded.then(() => true),
      new Promise<false>((resolve) => (giveUp = setTimeout(() => resolve(false), backstop))),
    ]);
    clearTimeout(giveUp);
    clearTimeout(deadline);
    if (!ended) for (const session of this.sessions) session.shutdownAbandoned();
    // A running reload closes its new set, because `closing` is set.
    await this.reloadTail;
    for (const set of [...this.liveSets]) await this.retire(set);
    // Sets retired by a session that ended meanwhile.
    await Promise.all(this.retiring);
    if (this.metricsServer) {
      this.metricsServer.closeAllConnections();
      await new Promise<void>((resolve) => this.metricsServer!.close(() => resolve()));
    }
    if (this.ownsSpoolDir) rmSync(this.spoolDir, { recursive: true, force: true });
    this.logger.info("server stopped");
  }
}

/** Returns the greeting after "220 ": the host name, ESMTP, and the banner when one is set. */
function greetingText(server: MailroomConfig["server"]): string {
  return server.banner === undefined ? `${server.hostname} ESMTP` : `${server.hostname} ESMTP ${server.banner}`;
}

function configuredSpoolDir(loaded: LoadedConfig): string | undefined {
  const configured = loaded.config.server.spoolDir;
  return configured === undefined ? undefined : path.resolve(loaded.dir, configured);
}

/**
 * Makes a configured spool folder on first start, like the mail and queue
 * folders, and removes the spool files of processes that are gone (a
 * kill -9 skips their removal). Spool files are named after their pid.
 */
function prepareSpoolDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new Error(`server.spoolDir ${dir} cannot be created: ${(error as Error).message}`, { cause: error });
  }
  removeLeftovers(dir, /^(\d+)-.+\.eml$/);
}

/**
 * Makes this process's spool folder in the system temp folder, named with
 * its pid. Folders left by processes that are gone (a kill -9 skips close())
 * are removed first, so crashes do not fill the temp folder.
 */
function defaultSpoolDir(): string {
  const base = os.tmpdir();
  removeLeftovers(base, /^mailroom-spool-(\d+)-/);
  return mkdtempSync(path.join(base, `mailroom-spool-${process.pid}-`));
}

function registerServices(container: DependencyContainer, loaded: LoadedConfig, logger: Logger): void {
  const server = loaded.config.server;
  container.register(TOKENS.Logger, { useValue: logger });
  if (!container.isRegistered(TOKENS.Clock, true)) {
    container.register(TOKENS.Clock, { useValue: systemClock });
  }
  if (!container.isRegistered(TOKENS.DnsResolver, true)) {
    let resolver: Dns2Resolver | undefined;
    // Built on first use, so a server that never resolves a name needs no resolv.conf.
    container.register(TOKENS.DnsResolver, {
      useFactory: () =>
        (resolver ??= new Dns2Resolver({
          nameservers: server.dns.nameservers.map(parseNameServer),
          timeout: server.dns.timeout,
        })),
    });
  }
}

/**
 * A connection's wire that counts its replies for the metrics. It is a class
 * rather than Object.create(wire), because a different prototype for each
 * connection gives each wire a hidden class of its own in V8, and the
 * engine's calls on wires then go through megamorphic lookups.
 */
class CountingWire implements Wire {
  /** The last reply was 354, so the next one ends a transaction. */
  private inData = false;

  constructor(
    private readonly inner: Wire,
    private readonly metrics: ServerMetrics,
  ) {}

  get id(): string {
    return this.inner.id;
  }

  get secure(): boolean {
    return this.inner.secure;
  }

  reply(reply: WireReply): void {
    this.metrics.reply(reply.code);
    if (this.inData) this.metrics.transaction(reply.code);
    this.inData = reply.code === 354;
    this.inner.reply(reply);
  }

  close(): void {
    this.inner.close();
  }

  hangUp(): void {
    this.inner.hangUp();
  }

  startData(): ReturnType<Wire["startData"]> {
    return this.inner.startData();
  }

  endData(): void {
    this.inner.endData();
  }

  startTls(): void {
    this.inner.startTls();
  }

  runSasl(method: "PLAIN" | "LOGIN", args: string[]): Promise<void> {
    return this.inner.runSasl(method, args);
  }
}
