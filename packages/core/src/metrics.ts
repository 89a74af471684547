import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { createRequire } from "node:module";
import type { Counter, Registry } from "prom-client";
import type { DependencyContainer } from "tsyringe";
import { parseHostPort } from "./config/schema.js";
import { TOKENS, type OutboundQueue } from "./services/tokens.js";

const HOOK_BUCKETS = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30];

/** The counts of one plugin and hook in the hook duration histogram. */
interface HookTimes {
  /** Observations per bucket, not cumulative; the last entry is +Inf. */
  buckets: number[];
  sum: number;
  count: number;
}

/**
 * The hook duration histogram. Handlers run several times per message, and
 * prom-client's Histogram hashes the label set of every observation, so this
 * one keeps plain counts per plugin and hook and builds the samples only
 * when scraped. It has the members prom-client's Registry reads from a
 * metric (name, help, type, get, reset).
 */
class HookDurationHistogram {
  readonly name = "mailroom_hook_duration_seconds";
  readonly help = "Time a plugin's hook handler took, by plugin and hook";
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly byPlugin = new Map<string, Map<string, HookTimes>>();

  observe(plugin: string, hook: string, seconds: number): void {
    let hooks = this.byPlugin.get(plugin);
    if (!hooks) {
      hooks = new Map();
      this.byPlugin.set(plugin, hooks);
    }
    let times = hooks.get(hook);
    if (!times) {
      times = { buckets: new Array<number>(HOOK_BUCKETS.length + 1).fill(0), sum: 0, count: 0 };
      hooks.set(hook, times);
    }
    let bucket = 0;
    while (bucket < HOOK_BUCKETS.length && seconds > HOOK_BUCKETS[bucket]!) bucket += 1;
    times.buckets[bucket]! += 1;
    times.sum += seconds;
    times.count += 1;
  }

  get() {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    for (const [plugin, hooks] of this.byPlugin) {
      for (const [hook, times] of hooks) {
        let cumulative = 0;
        for (const [index, count] of times.buckets.entries()) {
          cumulative += count;
          const le = index < HOOK_BUCKETS.length ? HOOK_BUCKETS[index]! : "+Inf";
          values.push({ metricName: `${this.name}_bucket`, labels: { le, plugin, hook }, value: cumulative });
        }
        values.push({ metricName: `${this.name}_sum`, labels: { plugin, hook }, value: times.sum });
        values.push({ metricName: `${this.name}_count`, labels: { plugin, hook }, value: times.count });
      }
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }

  reset(): void {
    this.byPlugin.clear();
  }
}

/** After this long, a scrape starts a new reading of the outbound queue. */
const QUEUE_SNAPSHOT_MAX_AGE_MS = 5_000;

/** Figures of the queue gauges, from one `list()` of the outbound queue. */
interface QueueSnapshot {
  records: number;
  /** Smallest `createdAt` (ms since the epoch); undefined when the queue is empty or none is registered. */
  oldestCreatedAt: number | undefined;
}

/**
 * The outbound queue figures of the last `list()`. plugin-mx's `list()`
 * reads every record file, which took about 7 s for 130,000 records on a
 * 2-CPU VM, so the queue is read at most once at a time and the gauges of
 * a scrape share the result. Until the first reading has finished, a
 * scrape waits for it. After that a scrape gets the last finished reading
 * at once, and when that reading is older than QUEUE_SNAPSHOT_MAX_AGE_MS
 * the scrape starts a new one in the background, which the next scrape
 * shows. A reading that fails is dropped, so the next scrape waits for a
 * new one and reports its error.
 */
class QueueSnapshotCache {
  private last: { snapshot: QueueSnapshot; readAt: number } | undefined;
  private reading: Promise<QueueSnapshot> | undefined;

  constructor(private readonly queue: () => OutboundQueue | undefined) {}

  async read(): Promise<QueueSnapshot> {
    if (!this.last) return this.refresh();
    if (Date.now() - this.last.readAt >= QUEUE_SNAPSHOT_MAX_AGE_MS) {
      // refresh() drops a failed reading, so the next scrape waits for a new one and reports its error.
      this.refresh().catch(() => undefined);
    }
    return this.last.snapshot;
  }

  private refresh(): Promise<QueueSnapshot> {
    this.reading ??= summarizeQueue(this.queue()).then(
      (snapshot) => {
        this.last = { snapshot, readAt: Date.now() };
        this.reading = undefined;
        return snapshot;
      },
      (error: unknown) => {
        this.last = undefined;
        this.reading = undefined;
        throw error;
      },
    );
    return this.reading;
  }
}

async function summarizeQueue(queue: OutboundQueue | undefined): Promise<QueueSnapshot> {
  const entries = queue ? await queue.list() : [];
  // A loop, because Math.min(...spread) passes each entry as an argument and
  // overflowed the call stack at 130,000 entries.
  let oldestCreatedAt: number | undefined;
  for (const entry of entries) {
    if (oldestCreatedAt === undefined || entry.createdAt < oldestCreatedAt) oldestCreatedAt = entry.createdAt;
  }
  return { records: entries.length, oldestCreatedAt };
}

/** The outcome of a transaction, from the class of the reply after DATA. */
export type TransactionOutcome = "accepted" | "deferred" | "rejected";

type PromClient = typeof import("prom-client");

/**
 * Prometheus metrics of one server, in a registry of its own so that two
 * servers in one process do not mix. Names start with `mailroom_`. The
 * counts are kept from the start. prom-client and its default process
 * metrics load only when the registry is first used (a scrape, or
 * serveMetrics at start), so a server without metrics does not pay for them.
 */
export class ServerMetrics {
  private promRegistry: Registry | undefined;
  private readonly hookDuration = new HookDurationHistogram();
  // Plain counts on the hot path; the prom-client metrics copy them when scraped.
  private readonly connectionCounts = { admitted: 0, refused: 0 };
  private active = 0;
  private readonly transactionCounts: Record<TransactionOutcome, number> = { accepted: 0, deferred: 0, rejected: 0 };
  /** Replies by the first digit of the code: index 2 counts 2xx. */
  private readonly replyCounts = [0, 0, 0, 0, 0, 0];

  /** `services` returns the container of the plugin set in service, whose OutboundQueue the gauges read. */
  constructor(private readonly services: () => DependencyContainer | undefined) {}

  /** The prom-client registry with every metric of this server. */
  get registry(): Registry {
    this.promRegistry ??= this.createRegistry();
    return this.promRegistry;
  }

  private createRegistry(): Registry {
    // prom-client is CommonJS, so it loads synchronously here.
    const { Counter, Gauge, Registry, collectDefaultMetrics } = createRequire(import.meta.url)("prom-client") as PromClient;
    const registry = new Registry();
    const registers = [registry];
    const services = this.services;
    collectDefaultMetrics({ register: registry, prefix: "mailroom_" });
    const counts = this;
    new Counter({
      name: "mailroom_connections_total",
      help: "SMTP connections, by whether they were admitted or refused by a limit",
      labelNames: ["result"],
      registers,
      collect() {
        copyCounts(this, "result", counts.connectionCounts);
      },
    });
    new Gauge({
      name: "mailroom_connections_active",
      help: "SMTP connections open now",
      registers,
      collect() {
        this.set(counts.active);
      },
    });
    new Counter({
      name: "mailroom_transactions_total",
      help: "Mail transactions that reached the end of DATA, by outcome",
      labelNames: ["outcome"],
      registers,
      collect() {
        copyCounts(this, "outcome", counts.transactionCounts);
      },
    });
    new Counter({
      name: "mailroom_replies_total",
      help: "SMTP replies sent, by code class (2xx, 3xx, 4xx, 5xx)",
      labelNames: ["class"],
      registers,
      collect() {
        const byClass = Object.fromEntries(counts.replyCounts.map((count, digit) => [`${digit}xx`, count]));
        copyCounts(this, "class", byClass);
      },
    });
    registry.registerMetric(this.hookDuration as unknown as Parameters<Registry["registerMetric"]>[0]);

    // Queue figures are read when scraped, from the queue of the set in service then.
    const queueSnapshot = new QueueSnapshotCache(() => {
      const container = services();
      return container?.isRegistered(TOKENS.OutboundQueue, true)
        ? container.resolve<OutboundQueue>(TOKENS.OutboundQueue)
        : undefined;
    });
    new Gauge({
      name: "mailroom_queue_messages",
      help: "Records in the outbound queue, one per message and destination domain",
      registers,
      async collect() {
        this.set((await queueSnapshot.read()).records);
      },
    });
    new Gauge({
      name: "mailroom_queue_oldest_age_seconds",
      help: "Age of the oldest record in the outbound queue, 0 when it is empty",
      registers,
      async collect() {
        const { oldestCreatedAt } = await queueSnapshot.read();
        this.set(oldestCreatedAt === undefined ? 0 : Math.max(0, (Date.now() - oldestCreatedAt) / 1000));
      },
    });
    return registry;
  }

  connectionOpened(admitted: boolean): void {
    if (admitted) {
      this.connectionCounts.admitted += 1;
      this.active += 1;
    } else {
      this.connectionCounts.refused += 1;
    }
  }

  connectionClosed(): void {
    this.active -= 1;
  }

  reply(code: number): void {
    const digit = Math.floor(code / 100);
    if (digit >= 2 && digit <= 5) this.replyCounts[digit]! += 1;
  }

  transaction(code: number): void {
    let outcome: TransactionOutcome = "rejected";
    if (code < 400) outcome = "accepted";
    else if (code < 500) outcome = "deferred";
    this.transactionCounts[outcome] += 1;
  }

  hook(plugin: string, hook: string, seconds: number): void {
    this.hookDuration.observe(plugin, hook, seconds);
  }
}

/** Sets a counter to the given totals, leaving out labels still at zero like prom-client does. */
function copyCounts<L extends string>(counter: Counter<L>, label: L, totals: Record<string, number>): void {
  counter.reset();
  for (const [value, total] of Object.entries(totals)) {
    if (total > 0) counter.inc({ [label]: value } as Partial<Record<L, string>>, total);
  }
}

/**
 * Returns the address the metrics server of a process binds: `listen`
 * (`host:port`) with `portOffset` added to the port. Port 0 stays 0, because
 * each process then gets a free port of its own. Throws when the sum passes
 * 65535.
 */
export function metricsTarget(listen: string, portOffset: number): { host: string; port: number } {
  const target = parseHostPort(listen);
  if (!target) throw new Error(`invalid server.metrics.listen ${JSON.stringify(listen)}: expected host:port`);
  if (target.port === 0 || portOffset === 0) return target;
  const port = target.port + portOffset;
  if (port > 65535) {
    throw new Error(
      `metrics port ${target.port} + ${portOffset} = ${port} is above 65535; lower server.metrics.listen's port or server.workers`,
    );
  }
  return { host: target.host, port };
}

/**
 * Serves `GET /metrics` and `HEAD /metrics` on `host:port`, and resolves
 * with the bound address. Other methods on /metrics get 405 with an Allow
 * header, other paths 404.
 * The socket is bound with `exclusive`, so in a node:cluster worker it is the
 * worker's own instead of one shared through the primary, and each scrape
 * reaches the process whose counts it reports.
 */
export async function serveMetrics(
  metrics: ServerMetrics,
  target: { host: string; port: number },
  logger: Logger,
): Promise<{ server: http.Server; address: AddressInfo }> {
  const server = http.createServer((request, response) => {
    if (request.url?.split("?")[0] !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain" }).end("Not found: metrics are at /metrics\n");
      return;
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      response
        .writeHead(405, { "content-type": "text/plain", allow: "GET, HEAD" })
        .end(`Method ${request.method} not allowed: use GET or HEAD\n`);
      return;
    }
    // HEAD collects the metrics too, so its Content-Length is the one GET would send.
    metrics.registry
      .metrics()
      .then((text) =>
        response
          .writeHead(200, { "content-type": metrics.registry.contentType, "content-length": Buffer.byteLength(text) })
          .end(request.method === "HEAD" ? undefined : text),
      )
      .catch((error: unknown) => {
        logger.error({ err: error }, "metrics collection failed");
        response.writeHead(500, { "content-type": "text/plain" }).end("metrics collection failed\n");
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: target.port, host: target.host, exclusive: true }, () => resolve());
  });
  const address = server.address() as AddressInfo;
  logger.info({ host: address.address, port: address.port }, "metrics listening");
  return { server, address };
}
