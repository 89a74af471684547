import { open, readdir, rename, unlink } from "node:fs/promises";
import path from "node:path";
import { syncDirectory } from "./directory-sync.js";
import { appendFrom, writeAll, writeNewFile } from "./record-file.js";
import { isMissing, recordShapeError, RECORD_SUFFIX, type QueueRecord, type QueueStore } from "./store.js";

// The previous queue format kept each record in two files: its state in
// active/ID.json (claimed/ID.PID.TOKEN.json while delivered) and its message
// in active/ID.eml, hard-linked between the records of one message.

/** Reads a state file of the previous format as a current record. */
export function parseLegacyRecord(text: string): QueueRecord {
  const value = JSON.parse(text) as Omit<QueueRecord, "version" | "messageId"> & { version: number; messageId?: string };
  if (value?.version !== 1) throw new Error("not a queue record");
  const problem = recordShapeError(value as Partial<QueueRecord>);
  if (problem) throw new Error(problem);
  return { ...value, version: 2, messageId: value.messageId ?? value.id };
}

async function readText(file: string): Promise<string> {
  const handle = await open(file, "r");
  try {
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
}

/**
 * Converts every record of the previous format in active/ into one queue
 * file. Each is claimed first (its state renamed into claimed/), so two
 * processes starting together do not both convert it. The old files are
 * removed only once the folder with the new file is fsync'd. A crash before
 * that leaves both, and the next start removes the old ones, so a record is
 * never lost, though in a narrow case it is delivered twice. Returns how
 * many records were converted.
 */
export async function convertLegacyRecords(store: QueueStore): Promise<number> {
  const names = (await readdir(store.active)).filter((name) => name.endsWith(".json"));
  if (names.length === 0) return 0;
  const converted = new Set<string>();
  for (const folder of [store.active, store.claimed]) {
    for (const name of await readdir(folder)) {
      if (name.endsWith(RECORD_SUFFIX)) converted.add(name.split(".")[0]!);
    }
  }

  const done: string[] = [];
  for (const name of names) {
    const id = name.slice(0, -".json".length);
    const state = store.claimedPath(id, ".json");
    const message = path.join(store.active, `${id}.eml`);
    try {
      await rename(path.join(store.active, name), state);
    } catch (error) {
      if (isMissing(error)) continue;
      throw error;
    }
    if (converted.has(id)) {
      await unlink(state).catch(() => undefined);
      await unlink(message).catch(() => undefined);
      continue;
    }
    let record: QueueRecord;
    try {
      record = parseLegacyRecord(await readText(state));
    } catch (error) {
      await store.setAside(state, id, error, message);
      continue;
    }
    const temporary = store.temporaryPath(id);
    try {
      await writeNewFile(temporary, async (fd) => {
        await writeAll(fd, [Buffer.from(`${JSON.stringify(record)}\n`, "utf8")]);
        await appendFrom(message, 0, fd);
      });
    } catch (error) {
      if (!isMissing(error)) {
        await rename(state, path.join(store.active, name)).catch(() => undefined);
        throw error;
      }
      await store.setAside(state, id, new Error(`the message file ${message} of the record is missing`));
      continue;
    }
    await rename(temporary, store.activePath(id));
    done.push(id);
  }

  if (done.length > 0) {
    await syncDirectory(store.active);
    for (const id of done) {
      await unlink(store.claimedPath(id, ".json")).catch(() => undefined);
      await unlink(path.join(store.active, `${id}.eml`)).catch(() => undefined);
    }
    store.logger.info({ records: done.length }, "converted queue records of the previous format");
  }
  return done.length;
}
