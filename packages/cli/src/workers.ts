import cluster, { type Worker } from "node:cluster";
import type { Logger } from "@mailroom/core";
import { EXIT } from "./report.js";

/**
 * Environment variable with a worker's slot, 1 to N. A worker that is forked
 * again after a crash gets the slot of the one it replaces, while its
 * cluster.worker.id is new.
 */
export const WORKER_SLOT_VARIABLE = "MAILROOM_WORKER_SLOT";

/** Delay before a worker that died after it was listening is forked again. */
const FIRST_RESTART_DELAY_MS = 1000;
/** Each further crash doubles the delay, up to this. */
const MAX_RESTART_DELAY_MS = 30_000;
/** A worker that was listening this long before it died resets the delay. */
const STABLE_UPTIME_MS = 60_000;

/**
 * The delay before a crashed worker is forked again: 1 s, doubled after
 * each crash up to 30 s, and back to 1 s once a worker that dies had been
 * listening for 60 s. Shared by all workers, so a bug that crashes each
 * worker in turn cannot make the primary fork in a tight loop.
 */
export class RestartBackoff {
  private delay = FIRST_RESTART_DELAY_MS;

  /** Returns the delay for a worker that died after listening for `listeningMs`, and grows the next one. */
  next(listeningMs: number): number {
    if (listeningMs >= STABLE_UPTIME_MS) this.delay = FIRST_RESTART_DELAY_MS;
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, MAX_RESTART_DELAY_MS);
    return delay;
  }
}

interface WorkerState {
  /** The worker's place from 1 to N, which a restarted worker takes over. */
  slot: number;
  forkedAt: number;
  /** When the worker's first socket was listening; undefined while it starts. */
  listeningAt?: number;
  /** A SIGHUP arrived while the worker started, so it gets one once it listens. */
  reloadPending: boolean;
}

/**
 * Runs the primary process of `server.workers: N`: forks N workers that
 * each run the whole server on the shared listening sockets, and passes
 * SIGHUP and SIGTERM on to them. A worker that dies after it was listening
 * is forked again after a RestartBackoff delay. A worker that dies before
 * it listens (an invalid config, a plugin that fails to start) is a start
 * failure and is not forked again until the next SIGHUP, which forks every
 * missing worker.
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
  const states = new Map<Worker, WorkerState>();
  /** The slot each pending restart will fork. */
  const restartTimers = new Map<NodeJS.Timeout, number>();
  const backoff = new RestartBackoff();

  const fork = (slot: number) => {
    const worker = cluster.fork({ [WORKER_SLOT_VARIABLE]: String(slot) });
    states.set(worker, { slot, forkedAt: Date.now(), reloadPending: false });
    return worker;
  };
  // cluster.workers keeps a worker whose IPC channel is still open during its "exit" event.
  const workers = () =>
    Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined && !worker.isDead());
  /** Forks workers until N run or wait for a restart; returns how many were forked. */
  const forkMissing = () => {
    const occupiedSlots = new Set([...workers().map((worker) => states.get(worker)?.slot), ...restartTimers.values()]);
    let forked = 0;
    for (let slot = 1; slot <= count; slot++) {
      if (occupiedSlots.has(slot)) continue;
      fork(slot);
      forked += 1;
    }
    return forked;
  };

  forkMissing();
  logger.info({ workers: count }, "workers started");

  return new Promise<number>((resolve) => {
    // NOTE: a worker counts as listening from its first socket. One that
    // then fails on a later listen entry is restarted with the backoff delay
    // instead of being taken as a start failure.
    cluster.on("listening", (worker) => {
      const state = states.get(worker);
      if (!state || state.listeningAt !== undefined) return;
      state.listeningAt = Date.now();
      if (state.reloadPending && !stopping) worker.process.kill("SIGHUP");
      state.reloadPending = false;
    });

    cluster.on("exit", (worker, code, signal) => {
      const state = states.get(worker);
      states.delete(worker);
      if (stopping) {
        // A worker that had not installed its handler yet ends from the SIGTERM itself.
        if (code !== 0 && signal !== "SIGTERM") failed = true;
        if (workers().length === 0) resolve(failed ? EXIT.failure : EXIT.ok);
        return;
      }
      const now = Date.now();
      const uptimeMs = now - (state?.forkedAt ?? now);
      const listening = state?.listeningAt !== undefined;
      const slot = state?.slot;
      logger.error({ worker: worker.id, slot, code, signal, uptimeMs, listening }, "worker died");

      if (listening) {
        const delayMs = backoff.next(now - state!.listeningAt!);
        logger.info({ worker: worker.id, slot, delayMs }, "restarting worker");
        const timer = setTimeout(() => {
          restartTimers.delete(timer);
          if (!stopping) fork(slot!);
        }, delayMs);
        restartTimers.set(timer, slot!);
        return;
      }

      // Forking again would fail the same way, so the others go on serving.
      const left = workers().length;
      if (left > 0 || restartTimers.size > 0) {
        logger.error(
          { worker: worker.id, slot, workers: left },
          "worker exited before it was listening and is not restarted; fix the cause, then send SIGHUP to start the missing workers",
        );
        return;
      }
      logger.fatal("every worker exited before it was listening; stopping");
      stopping = true;
      resolve(EXIT.failure);
    });

    process.on("SIGHUP", () => {
      if (stopping) return;
      logger.info("reloading every worker");
      for (const worker of workers()) {
        const state = states.get(worker);
        // The default action of SIGHUP ends a worker that has not installed
        // its handler yet, so a starting worker gets the signal once it listens.
        if (state && state.listeningAt === undefined) state.reloadPending = true;
        else worker.process.kill("SIGHUP");
      }
      const forked = forkMissing();
      if (forked > 0) logger.info({ workers: forked }, "starting missing workers");
    });
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "stopping workers");
      for (const timer of restartTimers.keys()) clearTimeout(timer);
      restartTimers.clear();
      const running = workers();
      if (running.length === 0) resolve(failed ? EXIT.failure : EXIT.ok);
      for (const worker of running) worker.process.kill("SIGTERM");
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
}
