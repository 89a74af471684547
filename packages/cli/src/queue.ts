import { ConfigError, loadConfig } from "@mailroom/core";
import { EXIT } from "./cli.js";

export type QueueAction =
  | { action: "list" }
  | { action: "show"; id: string }
  | { action: "retry"; id?: string; all?: boolean }
  | { action: "delete"; id: string };

/** Runs one `mailroom queue` action against the queue of the config's plugin-mx entry. */
export async function queueCommand(config: string, request: QueueAction): Promise<number> {
  try {
    // Loaded on demand, so that the other commands never load plugin code.
    const { queueDelete, queueList, queueRetry, queueShow } = await import("@mailroom/plugin-mx");
    const loaded = await loadConfig(config);
    switch (request.action) {
      case "list":
        process.stdout.write(`${await queueList(loaded)}\n`);
        break;
      case "show":
        process.stdout.write(`${await queueShow(loaded, request.id)}\n`);
        break;
      case "retry": {
        if (!request.all && !request.id) {
          process.stderr.write("mailroom: queue retry needs a record ID or --all\n");
          return EXIT.usage;
        }
        const target = request.all ? { all: true as const } : { id: request.id! };
        const count = await queueRetry(loaded, target);
        process.stdout.write(`${count} record${count === 1 ? "" : "s"} due now\n`);
        break;
      }
      case "delete":
        await queueDelete(loaded, request.id);
        process.stdout.write(`deleted ${request.id}\n`);
        break;
    }
    return EXIT.ok;
  } catch (error) {
    const message = error instanceof ConfigError ? error.message : `queue ${request.action} failed: ${(error as Error).message}`;
    process.stderr.write(`mailroom: ${message}\n`);
    return EXIT.failure;
  }
}
