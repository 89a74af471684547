import path from "node:path";
import { errorJsonReplacer, systemClock, type LoadedConfig, type Logger } from "@mailroom/core";
import { optionsSchema } from "./options.js";
import { DiskOutboundQueue, type QueueEntry } from "./queue.js";
import { QueueStore } from "./store.js";

/** Writes warnings and errors to stderr as one line each, for the CLI. */
function stderrLogger(): Logger {
  const write = (level: string) => (object: unknown, message?: string) => {
    const text = typeof object === "string" ? object : `${message ?? ""} ${JSON.stringify(object, errorJsonReplacer)}`;
    process.stderr.write(`${level}: ${text}\n`);
  };
  const noop = () => undefined;
  const logger = { warn: write("warning"), error: write("error"), info: noop, debug: noop, trace: noop, fatal: write("fatal") };
  return logger as unknown as Logger;
}

function isMxEntry(use: string): boolean {
  return use === "@mailroom/plugin-mx" || /(^|[/\\])(plugin-)?mx(\/|\\|$)|plugins[/\\]mx\b/.test(use);
}

/**
 * Opens the outbound queue of the plugin-mx entry in a loaded config. Unless
 * `readOnly`, it first does what a start does: creates the folders, takes
 * back records of processes that ended and sets unreadable ones aside.
 */
export async function openQueue(
  loaded: LoadedConfig,
  logger: Logger = stderrLogger(),
  options: { readOnly?: boolean } = {},
): Promise<DiskOutboundQueue> {
  const entry = loaded.config.plugins.find((plugin) => isMxEntry(plugin.use));
  if (!entry) throw new Error(`${loaded.file}: no @mailroom/plugin-mx entry in plugins`);
  const parsed = optionsSchema.safeParse(entry.with);
  if (!parsed.success) throw new Error(`${loaded.file}: invalid options for plugin mx: ${parsed.error.message}`);
  const readOnly = options.readOnly ?? false;
  const store = new QueueStore(path.resolve(loaded.dir, parsed.data.queueDir), logger, { readOnly });
  if (!readOnly) await store.init();
  return new DiskOutboundQueue(store, systemClock);
}

function time(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Formats rows as columns padded to the widest cell; exported for tests. */
export function table(rows: string[][]): string {
  // A loop, because spreading a large queue's rows into Math.max overflows the stack.
  const widths = rows[0]!.map(() => 0);
  for (const row of rows) {
    for (const [column, cell] of row.entries()) widths[column] = Math.max(widths[column]!, cell.length);
  }
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd()).join("\n");
}

function shorten(text: string, max: number): string {
  const line = text.replace(/\s+/g, " ");
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** `mailroom queue list`: a table of every queued record. It only reads the queue folder. */
export async function queueList(loaded: LoadedConfig): Promise<string> {
  const queue = await openQueue(loaded, stderrLogger(), { readOnly: true });
  const entries = await queue.list();
  if (entries.length === 0) return "The outbound queue is empty.";
  const rows = [["ID", "SENDER", "DOMAIN", "RECIPIENTS", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR"]];
  for (const entry of entries) {
    rows.push([
      entry.id,
      entry.sender === "" ? "<>" : entry.sender,
      entry.domain,
      String(entry.recipients.length),
      String(entry.attempts),
      entry.delivering ? "delivering" : time(entry.nextAttemptAt),
      shorten(entry.lastError ?? "", 60),
    ]);
  }
  return table(rows);
}

/** `mailroom queue show ID`: every field of one record. It only reads the queue folder. */
export async function queueShow(loaded: LoadedConfig, id: string): Promise<string> {
  const queue = await openQueue(loaded, stderrLogger(), { readOnly: true });
  const record = await queue.details(id);
  if (!record) throw new Error(`no queued message ${id}`);
  const lines = [
    `ID:           ${record.id}`,
    `Message:      ${record.messageId}`,
    `Sender:       <${record.sender}>`,
    `Domain:       ${record.domain}`,
    `Queued:       ${time(record.createdAt)}`,
    `Attempts:     ${record.attempts}`,
    `Next attempt: ${record.delivering ? "delivering now" : time(record.nextAttemptAt)}`,
    `Last error:   ${record.lastError ?? "-"}`,
    "Pending:",
    ...record.pending.map((recipient) => `  ${recipient}`),
  ];
  if (record.failed.length) {
    lines.push("Failed, bounce not yet sent:");
    for (const item of record.failed) lines.push(`  ${item.recipient}: ${item.response}`);
  }
  return lines.join("\n");
}

/** `mailroom queue retry ID` or `--all`: makes records due now; returns how many. */
export async function queueRetry(loaded: LoadedConfig, target: { id: string } | { all: true }): Promise<number> {
  const queue = await openQueue(loaded);
  if ("id" in target) {
    if (!(await queue.retry(target.id))) throw new Error(`no queued message ${target.id} (or it is being delivered)`);
    return 1;
  }
  let count = 0;
  for (const entry of await queue.list()) {
    if (!entry.delivering && (await queue.retry(entry.id))) count += 1;
  }
  return count;
}

/** `mailroom queue delete ID`: removes a record without delivering or bouncing it. */
export async function queueDelete(loaded: LoadedConfig, id: string): Promise<void> {
  const queue = await openQueue(loaded);
  if (!(await queue.remove(id))) throw new Error(`no queued message ${id} (or it is being delivered)`);
}

export type { QueueEntry };
