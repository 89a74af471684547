import cluster, { type Worker } from "node:cluster";
import type { Logger } from "@mailroom/core";
import { EXIT } from "./cli.js";

/** A worker that dies this soon after it started is not restarted, so a crash loop ends. */
const MIN_UPTIME_MS = 5000;

/**
 * Runs the primary process of `server.workers: N`: forks N workers that
 * each run the whole server on the shared listening sockets, passes SIGHUP
 * and SIGTERM on to them, and restarts a worker that dies unexpectedly.
 * Resolves with the exit code once every worker has stopped.
 */
export function runPrimary(count: number, logger: Logger): Promise<number> {
  // Workers accept connections themselves. Node's default on Linux has the
  // primary accept each one and pass it over IPC, which cost about a quarter
  // more CPU per message in a benchmark side run. The kernel spreads
  // connections less evenly, and NODE_CLUSTER_SCHED_POLICY=rr brings the
  // default back.
  if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = cluster.SCHED_NONE;
  let stopping = false;
  let failed = false;
  const startedAt = new Map<Worker, number>();

  const fork = () => {
    const worker = cluster.fork();
    startedAt.set(worker, Date.now());
    return worker;
  };
  for (let index = 0; index < count; index++) fork();
  logger.info({ workers: count }, "workers started");

  const workers = () => Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined);
  const signalAll = (signal: NodeJS.Signals) => {
    for (const worker of workers()) worker.process.kill(signal);
  };

  return new Promise<number>((resolve) => {
    cluster.on("exit", (worker, code, signal) => {
      const uptime = Date.now() - (startedAt.get(worker) ?? 0);
      startedAt.delete(worker);
      if (stopping) {
        if (code !== 0) failed = true;
        if (workers().length === 0) resolve(failed ? EXIT.failure : EXIT.ok);
        return;
      }
      logger.error({ worker: worker.id, code, signal, uptimeMs: uptime }, "worker died");
      if (uptime >= MIN_UPTIME_MS) {
        fork();
        return;
      }
      // A worker that cannot even start (say, the config became invalid) is
      // not restarted; the others go on serving until a reload or restart.
      const left = workers().length;
      if (left > 0) {
        logger.error({ workers: left }, "worker failed right after starting and is not restarted; fix the cause and send SIGHUP or restart");
        return;
      }
      logger.fatal("every worker failed right after starting; stopping");
      stopping = true;
      resolve(EXIT.failure);
    });

    process.on("SIGHUP", () => {
      logger.info("reloading every worker");
      signalAll("SIGHUP");
    });
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "stopping workers");
      signalAll("SIGTERM");
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
}
