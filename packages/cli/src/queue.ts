import { loadConfig } from "@mailroom/core";
import { EXIT, reportError, UsageError } from "./report.js";

export type QueueAction =
  | { action: "list" }
  | { action: "show"; id: string }
  | { action: "retry"; id?: string; all?: boolean }
  | { action: "delete"; id: string };

/** Runs one `mailroom queue` action against the queue of the config's plugin-mx entry. */
export async function queueCommand(config: string, request: QueueAction): Promise<number> {
  const command = `queue ${request.action}`;
  try {
    if (request.action === "retry" && Boolean(request.all) === Boolean(request.id)) {
      throw new UsageError(request.all ? "give a record ID or --all, not both" : "give a record ID or --all");
    }
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
    return reportError(command, error);
  }
}
