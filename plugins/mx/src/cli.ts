import { stat } from "node:fs/promises";
import path from "node:path";
import { errorJsonReplacer, readNearestPackageJson, systemClock, type LoadedConfig, type Logger } from "@mailroom/core";
import { optionsSchema, type Target } from "./options.js";
import { describeLocalHost } from "./routing.js";
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

const PACKAGE_NAME = "@mailroom/plugin-mx";

/** Returns the name in the nearest package.json at or above `file`, or undefined when there is none. */
function packageNameOf(file: string): string | undefined {
  // `file` may be a package folder, whose own package.json is the nearest.
  const name = readNearestPackageJson(file)?.manifest?.name;
  return typeof name === "string" ? name : undefined;
}

/**
 * True when a plugins entry loads plugin-mx: `use` is the package name, or a
 * path (relative to the config file) to a file of the package, such as its
 * src/index.ts or dist/index.js, whose nearest package.json names it. A
 * local plugin that only has "mx" in its path is not plugin-mx.
 */
function isMxEntry(use: string, configDir: string): boolean {
  if (use === PACKAGE_NAME) return true;
  if (!use.startsWith(".") && !path.isAbsolute(use)) return false;
  return packageNameOf(path.resolve(configDir, use)) === PACKAGE_NAME;
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
  const readOnly = options.readOnly ?? false;
  const store = new QueueStore(queueDirOf(loaded), logger, { readOnly });
  if (!readOnly) await store.init();
  return new DiskOutboundQueue(store, systemClock);
}

/** Returns the absolute queue folder of the plugin-mx entry in a loaded config. */
function queueDirOf(loaded: LoadedConfig): string {
  const entry = loaded.config.plugins.find((plugin) => isMxEntry(plugin.use, loaded.dir));
  if (!entry) throw new Error(`${loaded.file}: no @mailroom/plugin-mx entry in plugins`);
  const parsed = optionsSchema.safeParse(entry.with);
  if (!parsed.success) throw new Error(`${loaded.file}: invalid options for plugin mx: ${parsed.error.message}`);
  return path.resolve(loaded.dir, parsed.data.queueDir);
}

/**
 * Returns the absolute queue folder of every plugin-mx entry in a loaded
 * config, with the entry's index in `plugins`. Entries whose options are
 * invalid are left out, because the config fails to load with them.
 */
export function queueFolders(loaded: LoadedConfig): { index: number; dir: string }[] {
  const folders: { index: number; dir: string }[] = [];
  for (const [index, entry] of loaded.config.plugins.entries()) {
    if (!isMxEntry(entry.use, loaded.dir)) continue;
    const parsed = optionsSchema.safeParse(entry.with);
    if (parsed.success) folders.push({ index, dir: path.resolve(loaded.dir, parsed.data.queueDir) });
  }
  return folders;
}

/** A static next hop of a plugin-mx entry that the loop guard rejects, as `mailroom check` reports it. */
export interface LocalRouteHost {
  /** Index of the entry in `plugins`. */
  index: number;
  /** Option path of the next hop: `smarthost` or `routes["DOMAIN"]`. */
  option: string;
  host: string;
  /** Description of the host, such as "a loopback address". */
  kind: string;
}

/**
 * Lists the smarthost and routes of every plugin-mx entry whose host the
 * loop guard rejects, as far as that is known without DNS (see
 * describeLocalHost), when neither the route's allowLocal nor
 * allowLocalDestinations turns the guard off. Mail for such a route is
 * deferred until maxQueueLifetime and then bounced. Entries whose options
 * are invalid are left out.
 */
export function localRouteHosts(loaded: LoadedConfig): LocalRouteHost[] {
  const found: LocalRouteHost[] = [];
  for (const [index, entry] of loaded.config.plugins.entries()) {
    if (!isMxEntry(entry.use, loaded.dir)) continue;
    const parsed = optionsSchema.safeParse(entry.with);
    if (!parsed.success || parsed.data.allowLocalDestinations) continue;
    const targets: [string, Target][] = Object.entries(parsed.data.routes).map(([domain, target]) => [`routes["${domain}"]`, target]);
    if (parsed.data.smarthost) targets.push(["smarthost", parsed.data.smarthost]);
    for (const [option, target] of targets) {
      const kind = target.allowLocal ? undefined : describeLocalHost(target.host);
      if (kind) found.push({ index, option, host: target.host, kind });
    }
  }
  return found;
}

/**
 * Opens the queue for a command that changes records, or returns undefined
 * when its folder does not exist: such a queue has no record, and a command
 * on it creates no folder.
 */
async function openExistingQueue(loaded: LoadedConfig): Promise<DiskOutboundQueue | undefined> {
  try {
    await stat(queueDirOf(loaded));
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return undefined;
    throw error;
  }
  return openQueue(loaded);
}

/**
 * Formats a record's time as ISO 8601 in UTC. The store already rejects
 * times that a Date cannot hold, and this check keeps one such value, should
 * it get past, from failing the whole listing with a RangeError.
 */
function time(ms: number): string {
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return `invalid time ${ms}`;
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
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
  let record: Awaited<ReturnType<DiskOutboundQueue["details"]>>;
  try {
    record = await queue.details(id);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`queue record ${id} is unreadable (${reason}). The server sets it aside in corrupt/`);
  }
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
  const queue = await openExistingQueue(loaded);
  if ("id" in target) {
    if (!(await queue?.retry(target.id))) throw new Error(`no queued message ${target.id} (or it is being delivered)`);
    await queue!.requestScan();
    return 1;
  }
  if (!queue) return 0;
  let count = 0;
  for (const entry of await queue.list()) {
    if (!entry.delivering && (await queue.retry(entry.id))) count += 1;
  }
  if (count > 0) await queue.requestScan();
  return count;
}

/** `mailroom queue delete ID`: removes a record without delivering or bouncing it. */
export async function queueDelete(loaded: LoadedConfig, id: string): Promise<void> {
  const queue = await openExistingQueue(loaded);
  if (!(await queue?.remove(id))) throw new Error(`no queued message ${id} (or it is being delivered)`);
}

export type { QueueEntry };
