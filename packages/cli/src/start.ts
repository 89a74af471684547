import { ConfigError, loadConfig, MailroomServer } from "@mailroom/core";
import { EXIT } from "./cli.js";
import { createLogger } from "./logger.js";

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
  let logger;
  try {
    const loaded = await loadConfig(options.config);
    logger = createLogger(options.logLevel ?? loaded.config.server.logLevel);
    server = await MailroomServer.create(loaded, {
      logger,
      ...(options.listen ? { listen: options.listen } : {}),
    });
    await server.listen();
  } catch (error) {
    const message = error instanceof ConfigError ? error.message : `start failed: ${(error as Error).message}`;
    process.stderr.write(`mailroom: ${message}\n`);
    return EXIT.failure;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;

    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "stopping");
      server
        .close()
        .then(() => resolve(EXIT.ok))
        .catch((error: unknown) => {
          logger.error({ err: error }, "stop failed");
          resolve(EXIT.failure);
        })
        .finally(() => {
          process.off("SIGHUP", reload);
        });
    };

    const reload = () => {
      logger.info({ file: options.config }, "reloading config");
      server.reload().catch((error: unknown) => {
        logger.error({ err: error, detail: (error as Error).message }, "config reload failed; still running on the previous config");
      });
    };

    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    process.on("SIGHUP", reload);
  });
}
