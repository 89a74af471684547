import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { DependencyContainer } from "tsyringe";
import { TOKENS, type OutboundQueue } from "./services/tokens.js";

/** The outcome of a transaction, from the class of the reply after DATA. */
export type TransactionOutcome = "accepted" | "deferred" | "rejected";

/**
 * Prometheus metrics of one server, in a registry of its own so that two
 * servers in one process do not mix. Names start with `mailroom_`.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  private readonly connections: Counter<"result">;
  private readonly activeConnections: Gauge;
  private readonly transactions: Counter<"outcome">;
  private readonly replies: Counter<"class">;
  private readonly hookDuration: Histogram<"plugin" | "hook">;

  constructor(container: DependencyContainer) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "mailroom_" });
    this.connections = new Counter({
      name: "mailroom_connections_total",
      help: "SMTP connections, by whether they were admitted or refused by a limit",
      labelNames: ["result"],
      registers,
    });
    this.activeConnections = new Gauge({
      name: "mailroom_connections_active",
      help: "SMTP connections open now",
      registers,
    });
    this.transactions = new Counter({
      name: "mailroom_transactions_total",
      help: "Mail transactions that reached the end of DATA, by outcome",
      labelNames: ["outcome"],
      registers,
    });
    this.replies = new Counter({
      name: "mailroom_replies_total",
      help: "SMTP replies sent, by code class (2xx, 3xx, 4xx, 5xx)",
      labelNames: ["class"],
      registers,
    });
    this.hookDuration = new Histogram({
      name: "mailroom_hook_duration_seconds",
      help: "Time a plugin's hook handler took, by plugin and hook",
      labelNames: ["plugin", "hook"],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    });

    // Queue figures are read when scraped, from whatever queue is registered then.
    const queue = () =>
      container.isRegistered(TOKENS.OutboundQueue, true)
        ? container.resolve<OutboundQueue>(TOKENS.OutboundQueue)
        : undefined;
    new Gauge({
      name: "mailroom_queue_messages",
      help: "Messages waiting in the outbound queue",
      registers,
      async collect() {
        const current = queue();
        this.set(current ? (await current.list()).length : 0);
      },
    });
    new Gauge({
      name: "mailroom_queue_oldest_age_seconds",
      help: "Age of the oldest message in the outbound queue",
      registers,
      async collect() {
        const current = queue();
        const messages = current ? await current.list() : [];
        const oldest = Math.min(...messages.map((message) => message.createdAt));
        this.set(messages.length ? Math.max(0, (Date.now() - oldest) / 1000) : 0);
      },
    });
  }

  connectionOpened(admitted: boolean): void {
    this.connections.inc({ result: admitted ? "admitted" : "refused" });
    if (admitted) this.activeConnections.inc();
  }

  connectionClosed(): void {
    this.activeConnections.dec();
  }

  reply(code: number): void {
    this.replies.inc({ class: `${Math.floor(code / 100)}xx` });
  }

  transaction(code: number): void {
    let outcome: TransactionOutcome = "rejected";
    if (code < 400) outcome = "accepted";
    else if (code < 500) outcome = "deferred";
    this.transactions.inc({ outcome });
  }

  hook(plugin: string, hook: string, seconds: number): void {
    this.hookDuration.observe({ plugin, hook }, seconds);
  }
}

/** Serves `GET /metrics` on `host:port`; resolves with the bound address. */
export async function serveMetrics(
  metrics: ServerMetrics,
  target: { host: string; port: number },
  logger: Logger,
): Promise<{ server: http.Server; address: AddressInfo }> {
  const server = http.createServer((request, response) => {
    if (request.method !== "GET" || request.url?.split("?")[0] !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain" }).end("Not found: metrics are at /metrics\n");
      return;
    }
    metrics.registry
      .metrics()
      .then((text) => response.writeHead(200, { "content-type": metrics.registry.contentType }).end(text))
      .catch((error: unknown) => {
        logger.error({ err: error }, "metrics collection failed");
        response.writeHead(500, { "content-type": "text/plain" }).end("metrics collection failed\n");
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(target.port, target.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  logger.info({ host: address.address, port: address.port }, "metrics listening");
  return { server, address };
}
