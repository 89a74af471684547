import cluster from "node:cluster";
import { ConfigError, describeError, loadConfig, MailroomServer, type Logger } from "@mailroom/core";
import { checkListenAddresses } from "./listen-overlap.js";
import { createLogger } from "./logger.js";
import { EXIT, reportError } from "./report.js";
import { runPrimary, WORKER_SLOT_VARIABLE } from "./workers.js";

/**
 * Starts the server and resolves with the exit code once it stopped:
 * SIGTERM and SIGINT stop it gracefully, SIGHUP reloads the config.
 */
export async function startCommand(options: {
  config: string;
  listen?: string[];
  logLevel?: string;
}): Promise<number> {
  let server: MailroomServer;
  let logger: Logger;
  // Absolute, as the server logs it in "config reloaded".
  let configFile: string;
  try {
    const loaded = await loadConfig(options.config);
    configFile = loaded.file;
    checkListenAddresses(loaded, options.listen);
    logger = createLogger(options.logLevel ?? loaded.config.server.logLevel);
    const workers = loaded.config.server.workers;
    if (workers > 1 && cluster.isPrimary) return await runPrimary(workers, logger);
    // Each worker's log lines carry its number and slot. Worker slot i
    // serves metrics on the configured port + i - 1, so every worker has its own.
    let metricsPortOffset = 0;
    if (cluster.isWorker) {
      const slot = Number(process.env[WORKER_SLOT_VARIABLE]) || cluster.worker!.id;
      logger = logger.child({ worker: cluster.worker!.id, slot });
      metricsPortOffset = slot - 1;
    }
    server = await MailroomServer.create(loaded, {
      logger,
      metricsPortOffset,
      ...(options.listen ? { listen: options.listen } : {}),
    });
  } catch (error) {
    return reportError("start", error);
  }

  let resolveExit: (code: number) => void = () => {};
  const exit = new Promise<number>((resolve) => (resolveExit = resolve));
  let stopping = false;
  let failed = false;

  const reload = () => {
    logger.info({ file: configFile }, "reloading config");
    server.reload().catch((error: unknown) => {
      // A ConfigError's message is complete; its cause (a zod issue list,
      // a compiler error) would only repeat it.
      if (error instanceof ConfigError) {
        logger.error({ problem: error.message }, "config reload failed; still running on the previous config");
      } else {
        logger.error({ err: error }, "config reload failed; still running on the previous config");
      }
    });
  };
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.off("SIGHUP", reload);
    logger.info({ signal }, "stopping");
    server.close().then(
      () => resolveExit(failed ? EXIT.failure : EXIT.ok),
      (error: unknown) => {
        logger.error({ err: error }, "stop failed");
        resolveExit(EXIT.failure);
      },
    );
  };

  // Installed before listening, so a signal that follows the "listening" line is never lost.
  process.on("SIGHUP", reload);
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));

  // A promise rejected without a handler (typically in a plugin) is a bug
  // but leaves no half-done work behind, so the server runs on.
  process.on("unhandledRejection", (reason) => {
    logger.error({ err: reason }, "unhandled promise rejection, probably a bug in a plugin; the server keeps running");
  });
  // An exception thrown from a timer or callback may have stopped work half
  // way, so the server stops as it does on SIGTERM and exits 1. A supervisor,
  // or the primary process of `server.workers`, starts it again.
  process.on("uncaughtException", (error) => {
    logger.fatal({ err: error }, "uncaught exception, probably a bug in a plugin; stopping the server");
    if (stopping) process.exit(EXIT.failure);
    failed = true;
    stop("uncaughtException");
  });

  try {
    await server.listen();
  } catch (error) {
    // SIGTERM while the plugins started: listen() gives up, and the stop ends as it would after listening.
    if (!stopping) {
      logger.error({ err: error }, "listen failed");
      process.stderr.write(`mailroom: start: listen failed: ${describeError(error)}\n`);
      await server.close().catch(() => {});
      return EXIT.failure;
    }
    logger.warn({ err: error }, "listen did not finish because the server is stopping");
  }
  const code = await exit;
  // A worker's IPC channel would keep it running after the server stopped.
  if (cluster.isWorker) cluster.worker!.disconnect();
  return code;
}
