import { isAscii } from "node:buffer";
import { randomBytes, randomUUID } from "node:crypto";
import { watch } from "node:fs";
import { mkdir, open, readdir, rename, stat, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { OwnerCheck, removeLeftovers, type Logger, type OutboundContext } from "@mailroom/core";
import { syncDirectory, syncDirectoryShared } from "./directory-sync.js";
import { convertLegacyRecords, parseLegacyRecord } from "./legacy.js";
import {
  appendFrom,
  endsWithCrlf,
  hasEightBitOctets,
  readStateLine,
  readStateLineOf,
  renamePath,
  unlinkPath,
  writeAll,
  writeAt,
  writeNewFile,
  writeNewFileSynced,
} from "./record-file.js";

/** A recipient that failed for good and waits to be reported in a bounce. */
export interface FailedRecipient {
  recipient: string;
  code: number;
  enhanced: string;
  response: string;
  remoteMta?: string;
}

/** One message for one destination domain, as stored in the queue folder. */
export interface QueueRecord {
  version: 2;
  id: string;
  /** Shared by the records of one message (one per destination domain). */
  messageId: string;
  /** Envelope sender; "" for the null reverse-path. */
  sender: string;
  domain: string;
  /** Recipients still to deliver. */
  pending: string[];
  /** Recipients that failed for good and are not yet in a bounce. */
  failed: FailedRecipient[];
  createdAt: number;
  nextAttemptAt: number;
  attempts: number;
  lastError?: string;
  /** When a bounce that could not be handed over is tried again. */
  bounceAttemptAt?: number;
  /** Failed attempts to hand over the bounce of `failed`. Records written before it was kept lack it. */
  bounceAttempts?: number;
  /** When the first of those attempts was made; the bounce is dropped maxQueueLifetime later. */
  bounceFirstAttemptAt?: number;
  /**
   * The client sent SMTPUTF8 and the header fields contain UTF-8 (RFC 6532),
   * so the message goes only to servers that offer SMTPUTF8.
   */
  utf8Headers?: true;
  /**
   * Octets of the message that follows the state line, checked before each
   * delivery so that a file cut short is never sent. Records of earlier
   * versions lack it until their first attempt writes them anew.
   */
  messageSize?: number;
  /** The message contains octets above 127, so it goes only to servers that offer 8BITMIME (RFC 6152). */
  eightBit?: true;
  /** The client sent BODY=8BITMIME, which is passed on to servers that offer 8BITMIME. */
  body8BitMime?: true;
}

/** The result of `add`: the records, and the stored copy when it was kept in memory. */
export interface AddedMessage {
  records: QueueRecord[];
  content?: Buffer;
}

/** The queue file of a claimed record, the offset of its message in it and the message's size. */
export interface MessageLocation {
  path: string;
  start: number;
  /** Octets of the message; undefined for a record of an earlier version that this process did not claim. */
  size?: number;
}

/** Returns what the outbound hooks see of a record. */
export function contextOf(record: QueueRecord): OutboundContext {
  return {
    id: record.id,
    sender: record.sender,
    domain: record.domain,
    recipients: [...record.pending],
    attempts: record.attempts,
  };
}

const RECORD_ID = /^[A-Za-z0-9_-]{1,64}$/;

export function isRecordId(id: string): boolean {
  return RECORD_ID.test(id);
}

/** Returns a new message id: the time in base 36, then 12 random hex digits. */
function newMessageId(): string {
  // The last group of a version 4 UUID is 48 random bits; randomUUID draws
  // from a cached pool, which costs less per call than randomBytes.
  return `${Date.now().toString(36)}${randomUUID().slice(-12)}`;
}

function isFailedRecipient(value: Partial<FailedRecipient> | null): boolean {
  return (
    typeof value?.recipient === "string" &&
    typeof value.code === "number" &&
    typeof value.enhanced === "string" &&
    typeof value.response === "string" &&
    (value.remoteMta === undefined || typeof value.remoteMta === "string")
  );
}

/**
 * Largest distance from the epoch, in milliseconds, of a time that a Date
 * can hold (ECMA-262, "Time Values and Time Range"): 100,000,000 days.
 */
const MAX_TIME_VALUE = 8.64e15;

/** The time fields of a record, in milliseconds since the epoch. */
const TIME_FIELDS = ["createdAt", "nextAttemptAt", "bounceAttemptAt", "bounceFirstAttemptAt"] as const;
const REQUIRED_TIME_FIELDS: ReadonlySet<string> = new Set(["createdAt", "nextAttemptAt"]);

function isTimeValue(value: unknown): boolean {
  return typeof value === "number" && Number.isFinite(value) && Math.abs(value) <= MAX_TIME_VALUE;
}

/**
 * Checks the fields that every record needs, down to each recipient, so a
 * record that a later step could not handle is set aside when it is read.
 * Returns why the record is invalid, or undefined when it is valid. A time
 * field must be a number that a Date can hold, because `mailroom queue list`
 * formats it as a date and the scheduler computes timer delays from it. The
 * caller checks `version`.
 */
export function recordShapeError(value: Partial<QueueRecord> | undefined): string | undefined {
  const valid =
    typeof value?.id === "string" &&
    isRecordId(value.id) &&
    typeof value.sender === "string" &&
    typeof value.domain === "string" &&
    Array.isArray(value.pending) &&
    value.pending.every((recipient) => typeof recipient === "string") &&
    Array.isArray(value.failed) &&
    value.failed.every((item) => isFailedRecipient(item)) &&
    typeof value.attempts === "number";
  if (!valid) return "not a queue record";
  for (const field of TIME_FIELDS) {
    const time = value[field];
    if (time === undefined && !REQUIRED_TIME_FIELDS.has(field)) continue;
    if (!isTimeValue(time)) {
      return `not a queue record: ${field} is ${JSON.stringify(time) ?? "missing"}, not a time in milliseconds that a Date can hold`;
    }
  }
  return undefined;
}

function parseRecord(text: string): QueueRecord {
  const value = JSON.parse(text) as QueueRecord;
  if (value?.version !== 2 || typeof value.messageId !== "string") throw new Error("not a queue record");
  const problem = recordShapeError(value);
  if (problem) throw new Error(problem);
  return value;
}

function stateLine(record: QueueRecord): Buffer {
  return Buffer.from(`${JSON.stringify(record)}\n`, "utf8");
}

/**
 * Returns the state line padded with spaces to `length` octets, line feed
 * included. JSON allows whitespace after the value, so it reads as the
 * unpadded line does.
 */
function paddedStateLine(record: QueueRecord, length: number): Buffer {
  const json = Buffer.from(JSON.stringify(record), "utf8");
  if (json.length + 1 > length) throw new Error(`state line of ${json.length + 1} octets does not fit the ${length} reserved for it`);
  const line = Buffer.alloc(length, 0x20);
  json.copy(line);
  line[length - 1] = 0x0a;
  return line;
}

/** The error of a queue file that failed an integrity check, so its record must not be delivered. */
export class DamagedRecordError extends Error {
  override name = "DamagedRecordError";
}

export function isMissing(error: unknown): boolean {
  return (error as { code?: string }).code === "ENOENT";
}

/** Suffix of a queue file: a state line, then the message. */
export const RECORD_SUFFIX = ".msg";
/** Names in claimed/: record id, process id, a token of that process's run, and the suffix. */
const CLAIMED = /^(.+)\.(\d+)\.([0-9a-f]+)\.(msg|json)$/;
/** Names in tmp/: record id, process id, run token, a counter or random part (hex), and the suffix. */
const TEMPORARY = /^[A-Za-z0-9_-]+\.(\d+)\.([0-9a-f]+)\.[0-9a-f]+\.msg$/;
const RUN_TOKEN = randomBytes(6).toString("hex");
/** Numbers the temporary files of this run; with the pid and run token it makes their names unique. */
let temporaryCount = 0;
/** Messages up to this size are written with one call and can be kept in memory for delivery. */
const IN_MEMORY_LIMIT = 1024 * 1024;
/** Age after which a file in tmp/ whose name carries no owner is removed at start. */
const ORPHAN_AGE_MS = 3_600_000;

/**
 * True when the process that made the entry `file` (a claim or a file in
 * tmp/) has ended: this process's own pid with another token means an
 * earlier run whose pid was reused, and for another pid see OwnerCheck. An
 * entry that is gone already counts as not ended, so the caller skips it.
 */
async function ownerGone(owners: OwnerCheck, file: string, pid: number, token: string): Promise<boolean> {
  if (pid === process.pid) return token !== RUN_TOKEN;
  if (!owners.exists(pid)) return true;
  try {
    return owners.gone(pid, (await stat(file)).ctimeMs);
  } catch (error) {
    if (isMissing(error)) return false;
    throw error;
  }
}

/** A record in claimed/, as `listClaimed` returns it. */
export interface ClaimedEntry {
  id: string;
  pid: number;
  /** The process that claimed it has ended, so a start or a scan takes it back. */
  abandoned: boolean;
  record?: QueueRecord;
}

/**
 * The on-disk queue. Layout under the queue folder:
 * - `tmp/`: files being written; never read as records;
 * - `active/ID.msg`: a record waiting for its next attempt. The file starts
 *   with the record's state as one JSON line, and the message follows. It is
 *   written in tmp/, fsync'd and renamed in, so a record exists once it is
 *   complete;
 * - `claimed/ID.PID.TOKEN.msg`: a record a process is delivering. A process
 *   that delivers writes its new records straight into claimed/;
 * - `corrupt/`: records that could not be read, set aside.
 *
 * Files in tmp/ are named ID.PID.TOKEN.RANDOM.msg, so a start can remove
 * those of a process that ended at once. Folders are created 0700 and files
 * 0600.
 *
 * A store opened with `readOnly` only reads: `list` leaves unreadable
 * records where they are, and a missing folder reads as empty. It is for
 * commands that must not change the queue, such as `mailroom queue list`.
 *
 * The previous format kept the state in `active/ID.json` and the message in
 * `active/ID.eml`; `init` converts such records (see legacy.ts).
 */
/**
 * A file in the queue folder that `mailroom queue retry` writes. Servers
 * that deliver from the folder watch for it and scan the queue at once,
 * instead of at their next pollInterval.
 */
export const SCAN_REQUEST_FILE = "scan-request";

export class QueueStore {
  readonly tmp: string;
  readonly active: string;
  readonly claimed: string;
  readonly corrupt: string;
  /** Offset and size of the message in the queue file of each record this process claimed. */
  private readonly locations = new Map<string, { start: number; size?: number }>();

  private readonly readOnly: boolean;

  constructor(
    readonly dir: string,
    readonly logger: Logger,
    options: { readOnly?: boolean } = {},
  ) {
    this.readOnly = options.readOnly ?? false;
    this.tmp = path.join(dir, "tmp");
    this.active = path.join(dir, "active");
    this.claimed = path.join(dir, "claimed");
    this.corrupt = path.join(dir, "corrupt");
  }

  /** Asks the servers that deliver from this folder to scan it now; see SCAN_REQUEST_FILE. */
  async requestScan(): Promise<void> {
    await writeFile(path.join(this.dir, SCAN_REQUEST_FILE), `${new Date().toISOString()}\n`);
  }

  /**
   * Calls `onRequest` whenever another process asks for a scan. Returns a
   * function that stops watching. Where the file system cannot be watched,
   * it logs a warning and the server scans at each pollInterval only.
   */
  watchScanRequests(onRequest: () => void): () => void {
    try {
      const watcher = watch(this.dir, (_event, name) => {
        if (name === SCAN_REQUEST_FILE) onRequest();
      });
      watcher.on("error", (error) => this.logger.warn({ err: error, dir: this.dir }, "watching the queue folder for scan requests failed"));
      return () => watcher.close();
    } catch (error) {
      this.logger.warn({ err: error, dir: this.dir }, "cannot watch the queue folder; queue retry takes effect at the next pollInterval");
      return () => undefined;
    }
  }

  /**
   * Creates the folders, takes back records claimed by processes that are
   * gone, and converts records of the previous format.
   */
  async init(): Promise<void> {
    this.assertWritable("init");
    for (const folder of [this.tmp, this.active, this.claimed, this.corrupt]) {
      await mkdir(folder, { recursive: true, mode: 0o700 });
    }
    await this.takeBackAbandoned();
    await syncDirectory(this.active);
    await convertLegacyRecords(this);
    await this.removeOrphans();
  }

  private assertWritable(operation: string): void {
    if (this.readOnly) throw new Error(`queue store ${this.dir} is open read-only; ${operation} would change it`);
  }

  /**
   * Moves the records claimed by processes that have ended back to active/
   * and returns how many it moved. Two processes may do this at once: a
   * record the other one moved first is skipped.
   */
  async takeBackAbandoned(): Promise<number> {
    const owners = new OwnerCheck();
    let count = 0;
    for (const name of await readdir(this.claimed)) {
      const match = CLAIMED.exec(name);
      if (!match) continue;
      const file = path.join(this.claimed, name);
      if (!(await ownerGone(owners, file, Number(match[2]), match[3]!))) continue;
      if (await this.takeBack(file, match[1]!, `.${match[4]!}`)) count += 1;
    }
    if (count > 0) await syncDirectory(this.active);
    return count;
  }

  /** Moves one claimed file back to active/ and returns false when another process took it back first. */
  private async takeBack(from: string, id: string, suffix: string): Promise<boolean> {
    const to = path.join(this.active, `${id}${suffix}`);
    try {
      await stat(to);
    } catch (error) {
      if (!isMissing(error)) throw error;
      try {
        await rename(from, to);
      } catch (renameError) {
        if (isMissing(renameError)) return false;
        throw renameError;
      }
      this.logger.warn({ id }, "took back a queue record claimed by a process that ended");
      return true;
    }
    // A copy in active/ is the newer state: release renames it in before it
    // removes the claimed file.
    await unlink(from).catch((error: unknown) => {
      if (!isMissing(error)) throw error;
    });
    return false;
  }

  /**
   * Removes files of unfinished writes: at once when the process that wrote
   * them has ended, after an hour when their name carries no owner. Also
   * removes previous-format messages without a record, after an hour.
   */
  private async removeOrphans(): Promise<void> {
    const names = new Set(await readdir(this.active));
    const claimedIds = new Set((await readdir(this.claimed)).map((name) => name.split(".")[0]));
    const cutoff = Date.now() - ORPHAN_AGE_MS;
    for (const name of names) {
      if (!name.endsWith(".eml")) continue;
      const id = name.slice(0, -4);
      if (names.has(`${id}.json`) || claimedIds.has(id)) continue;
      const file = path.join(this.active, name);
      const info = await stat(file).catch(() => undefined);
      if (info && info.mtimeMs < cutoff) {
        await unlink(file).catch(() => undefined);
        this.logger.warn({ id }, "removed a queued message file without a record");
      }
    }
    removeLeftovers(this.tmp, TEMPORARY);
    for (const name of await readdir(this.tmp)) {
      const file = path.join(this.tmp, name);
      const match = TEMPORARY.exec(name);
      if (match) {
        // An earlier run of a process that had this process's pid.
        if (Number(match[1]) === process.pid && match[2] !== RUN_TOKEN) await unlink(file).catch(() => undefined);
        continue;
      }
      const info = await stat(file).catch(() => undefined);
      if (info && info.mtimeMs < cutoff) await unlink(file).catch(() => undefined);
    }
  }

  activePath(id: string): string {
    return path.join(this.active, `${id}${RECORD_SUFFIX}`);
  }

  claimedPath(id: string, suffix = RECORD_SUFFIX): string {
    return path.join(this.claimed, `${id}.${process.pid}.${RUN_TOKEN}${suffix}`);
  }

  /** Returns a new path in tmp/ for a queue file of the record, named after this process. */
  temporaryPath(id: string): string {
    temporaryCount += 1;
    return path.join(this.tmp, `${id}.${process.pid}.${RUN_TOKEN}.${temporaryCount.toString(16)}${RECORD_SUFFIX}`);
  }

  /**
   * Stores one message for several destination domains, one queue file per
   * domain, and returns once every file and the folder are fsync'd. With
   * `claim`, the files go straight into claimed/ for this process, so its
   * scheduler can deliver them without reading them back. Without it, they
   * go to active/ for whichever process scans first. `body` is a stream or,
   * for a message in memory, its buffers.
   */
  async add(
    body: Readable | Buffer[],
    entry: { sender: string; domains: Map<string, string[]>; now: number; utf8Headers?: boolean; body8BitMime?: boolean },
    options: { claim?: boolean } = {},
  ): Promise<AddedMessage> {
    this.assertWritable("add");
    const messageId = newMessageId();
    const records = [...entry.domains].map(
      ([domain, recipients], index): QueueRecord => ({
        version: 2,
        id: `${messageId}-${index}`,
        messageId,
        sender: entry.sender,
        domain,
        pending: recipients,
        failed: [],
        createdAt: entry.now,
        nextAttemptAt: entry.now,
        attempts: 0,
        ...(entry.utf8Headers ? { utf8Headers: true as const } : {}),
        ...(entry.body8BitMime ? { body8BitMime: true as const } : {}),
      }),
    );
    const temporary = records.map((record) => this.temporaryPath(record.id));
    const targets = records.map((record) => (options.claim ? this.claimedPath(record.id) : this.activePath(record.id)));
    const renamed: string[] = [];
    const lines: Buffer[] = [];
    let content: Buffer | undefined;
    try {
      const first = await writeFirstCopy(temporary[0]!, records[0]!, body);
      content = first.content;
      lines.push(first.line);
      const { messageSize, eightBit } = records[0]!;
      for (let index = 1; index < records.length; index++) {
        const record = records[index]!;
        record.messageSize = messageSize;
        if (eightBit) record.eightBit = eightBit;
        const line = stateLine(record);
        lines.push(line);
        if (content) {
          await writeNewFileSynced(temporary[index]!, [line, content]);
          continue;
        }
        await writeNewFile(temporary[index]!, async (fd) => {
          await writeAll(fd, [line]);
          await appendFrom(temporary[0]!, first.line.length, fd, messageSize);
        });
      }
      for (const [index, target] of targets.entries()) {
        await renamePath(temporary[index]!, target);
        renamed.push(target);
      }
      await syncDirectoryShared(options.claim ? this.claimed : this.active);
    } catch (error) {
      for (const file of [...temporary, ...renamed]) await unlink(file).catch(() => undefined);
      throw error;
    }
    if (options.claim) {
      for (const [index, record] of records.entries()) {
        this.locations.set(record.id, { start: lines[index]!.length, size: record.messageSize! });
      }
    }
    return content ? { records, content } : { records };
  }

  /** Sets an unreadable or damaged record aside in corrupt/ and logs it; it is never delivered. */
  async setAside(file: string, id: string, error: unknown, message?: string): Promise<void> {
    const suffix = path.extname(file);
    const target = path.join(this.corrupt, `${id}.${Date.now()}${suffix}`);
    try {
      await rename(file, target);
      if (message) await rename(message, target.replace(/\.json$/, ".eml")).catch(() => undefined);
      const logMessage = error instanceof DamagedRecordError ? "damaged queue record set aside" : "unreadable queue record set aside";
      this.logger.error({ id, err: error, movedTo: target }, logMessage);
    } catch (moveError) {
      if (!isMissing(moveError)) {
        this.logger.error({ id, err: moveError }, "unreadable queue record could not be set aside");
      }
    }
  }

  /**
   * Reads every record not claimed by a process. Unreadable ones are set
   * aside, or with `readOnly` skipped with a warning.
   */
  async list(): Promise<QueueRecord[]> {
    const records: QueueRecord[] = [];
    for (const name of await this.readFolder(this.active)) {
      if (!name.endsWith(RECORD_SUFFIX)) continue;
      const id = name.slice(0, -RECORD_SUFFIX.length);
      const file = path.join(this.active, name);
      let text: string;
      try {
        text = (await readStateLineOf(file)).text;
      } catch (error) {
        if (isMissing(error)) continue;
        await this.skipUnreadable(file, id, error);
        continue;
      }
      try {
        records.push(withFileId(parseRecord(text), id));
      } catch (error) {
        await this.skipUnreadable(file, id, error);
      }
    }
    return records;
  }

  /** Reads one record of active/ by its id, without listing the folder; undefined when there is none. */
  async readActive(id: string): Promise<QueueRecord | undefined> {
    if (!isRecordId(id)) return undefined;
    try {
      return withFileId(parseRecord((await readStateLineOf(this.activePath(id))).text), id);
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  private async skipUnreadable(file: string, id: string, error: unknown): Promise<void> {
    if (!this.readOnly) return this.setAside(file, id, error);
    this.logger.warn({ id, err: error, file }, "unreadable queue record left in place; the server sets it aside");
  }

  /** Lists a folder of the queue. With `readOnly`, a folder not created yet reads as empty. */
  private async readFolder(folder: string): Promise<string[]> {
    try {
      return await readdir(folder);
    } catch (error) {
      if (this.readOnly && isMissing(error)) return [];
      throw error;
    }
  }

  /** Returns the ids of the records being delivered right now, by any process. */
  async claimedIds(): Promise<string[]> {
    const ids: string[] = [];
    for (const name of await readdir(this.claimed)) {
      const match = CLAIMED.exec(name);
      if (match) ids.push(match[1]!);
    }
    return ids;
  }

  /** Returns the records in claimed/: being delivered now, or left by a process that ended. */
  async listClaimed(): Promise<ClaimedEntry[]> {
    const result: ClaimedEntry[] = [];
    const owners = new OwnerCheck();
    for (const name of await this.readFolder(this.claimed)) {
      const match = CLAIMED.exec(name);
      if (!match) continue;
      const file = path.join(this.claimed, name);
      const abandoned = await ownerGone(owners, file, Number(match[2]), match[3]!);
      let record: QueueRecord | undefined;
      try {
        record =
          match[4] === "json"
            ? parseLegacyRecord(await readStateText(file))
            : parseRecord((await readStateLineOf(file)).text);
      } catch {
        record = undefined;
      }
      result.push({ id: match[1]!, pid: Number(match[2]), abandoned, ...(record ? { record: withFileId(record, match[1]!) } : {}) });
    }
    return result;
  }

  /**
   * Claims a record by renaming its file into claimed/, so no other process
   * (or CLI command) works on it. Returns undefined when it is gone or taken.
   */
  async claim(id: string): Promise<QueueRecord | undefined> {
    this.assertWritable("claim");
    if (!isRecordId(id)) return undefined;
    const claimed = this.claimedPath(id);
    try {
      await rename(this.activePath(id), claimed);
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    try {
      return await this.readClaimed(claimed, id);
    } catch (error) {
      await this.setAside(claimed, id, error);
      return undefined;
    }
  }

  /**
   * Reads a record this process claimed and checks that its message is
   * whole: as many octets as `messageSize` records. A record of an earlier
   * version has no size, so its message must end in CRLF, as every stored
   * copy does, and it gets its size and `eightBit` here, which its next
   * release writes. Throws DamagedRecordError when a check fails.
   */
  private async readClaimed(file: string, id: string): Promise<QueueRecord> {
    const handle = await open(file, "r");
    try {
      const { text, bodyOffset } = await readStateLine(handle);
      const record = parseRecord(text);
      const { size: fileSize } = await handle.stat();
      const size = fileSize - bodyOffset;
      if (record.messageSize === undefined) {
        if (!(await endsWithCrlf(handle, bodyOffset, fileSize))) {
          throw new DamagedRecordError(`queue file ${file} is damaged: its message does not end in CRLF, so it was probably cut short`);
        }
        record.messageSize = size;
        if (await hasEightBitOctets(handle, bodyOffset, fileSize)) record.eightBit = true;
      } else if (size !== record.messageSize) {
        throw new DamagedRecordError(
          `queue file ${file} is damaged: its message has ${size} octets, but its state line records ${record.messageSize}`,
        );
      }
      if (record.id !== id) {
        this.logger.warn({ id, stateLineId: record.id }, "queue record file name differs from the id in its state line; using the file name");
      }
      this.locations.set(id, { start: bodyOffset, size: record.messageSize });
      return withFileId(record, id);
    } finally {
      await handle.close();
    }
  }

  /** Returns the queue file of a record this process claimed, the offset of its message and its size. */
  async messageOf(id: string): Promise<MessageLocation> {
    const file = this.claimedPath(id);
    let location = this.locations.get(id);
    if (location === undefined) {
      const { text, bodyOffset } = await readStateLineOf(file);
      const { messageSize } = parseRecord(text);
      location = messageSize === undefined ? { start: bodyOffset } : { start: bodyOffset, size: messageSize };
      this.locations.set(id, location);
    }
    return { path: file, ...location };
  }

  /**
   * Writes the new state of a claimed record and makes it visible again. The
   * queue file is written anew (state line and a copy of the message),
   * because the state line sits before the message.
   */
  async release(record: QueueRecord): Promise<void> {
    const { path: source, start, size } = await this.messageOf(record.id);
    const temporary = this.temporaryPath(record.id);
    await writeNewFile(temporary, async (fd) => {
      await writeAll(fd, [stateLine(record)]);
      await appendFrom(source, start, fd, record.messageSize ?? size);
    });
    try {
      await rename(temporary, this.activePath(record.id));
    } catch (error) {
      await unlink(temporary).catch(() => undefined);
      throw error;
    }
    await syncDirectoryShared(this.active);
    this.locations.delete(record.id);
    await unlink(source).catch(() => undefined);
  }

  /** Puts a claimed record back in active/ unchanged, for whichever process scans next. */
  async unclaim(id: string): Promise<void> {
    await rename(this.claimedPath(id), this.activePath(id));
    this.locations.delete(id);
    await syncDirectoryShared(this.active);
  }

  /**
   * Removes a claimed record for good (delivered, bounced or deleted). The
   * folder is not fsync'd: after a power failure the record may come back,
   * and its message is delivered again (at least once), but it is not lost.
   */
  async finish(id: string): Promise<void> {
    this.locations.delete(id);
    await unlinkPath(this.claimedPath(id)).catch((error: unknown) => {
      if (!isMissing(error)) throw error;
    });
  }

  /** Reads the header block of the message of a record this process claimed (at most 256 KiB). */
  async readHeaders(id: string): Promise<string> {
    const { path: file, start } = await this.messageOf(id);
    const handle = await open(file, "r");
    try {
      const buffer = Buffer.alloc(256 * 1024);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, start);
      const text = buffer.subarray(0, bytesRead).toString("utf8");
      const end = text.indexOf("\r\n\r\n");
      return end === -1 ? text : text.slice(0, end + 2);
    } finally {
      await handle.close();
    }
  }
}

async function readStateText(file: string): Promise<string> {
  const handle = await open(file, "r");
  try {
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
}

/**
 * Returns a record whose id is the name of its queue file. The file name is
 * the key that claims, retries and deletes use, so it wins over the id in a
 * state line that differs (a file renamed by hand).
 */
function withFileId(record: QueueRecord, id: string): QueueRecord {
  return record.id === id ? record : { ...record, id };
}

/**
 * Writes the first queue file of a message: its state line, then the stored
 * copy. Sets the record's `messageSize` and `eightBit`, and returns the line
 * as written, whose length is the message's offset. A message up to
 * IN_MEMORY_LIMIT is written with one call and returned in `content`, so
 * later files and the delivery need not read it back. A larger one is
 * streamed after space for the longest state line it can have, and its
 * state line is written there last, padded with spaces, before the fsync.
 */
async function writeFirstCopy(file: string, record: QueueRecord, body: Readable | Buffer[]): Promise<{ line: Buffer; content?: Buffer }> {
  if (Array.isArray(body)) {
    const content = body.length === 1 ? body[0]! : Buffer.concat(body);
    describeMessage(record, content.length, !isAscii(content));
    const line = stateLine(record);
    await writeNewFileSynced(file, [line, content]);
    return content.length <= IN_MEMORY_LIMIT ? { line, content } : { line };
  }
  let written: { line: Buffer; content?: Buffer } | undefined;
  await writeNewFile(file, async (fd) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let eightBit = false;
    let reserved: number | undefined;
    for await (const chunk of body) {
      const buffer = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
      size += buffer.length;
      if (!eightBit && !isAscii(buffer)) eightBit = true;
      if (reserved !== undefined) {
        await writeAll(fd, [buffer]);
        continue;
      }
      chunks.push(buffer);
      if (size > IN_MEMORY_LIMIT) {
        reserved = stateLine({ ...record, messageSize: Number.MAX_SAFE_INTEGER, eightBit: true }).length;
        await writeAll(fd, [Buffer.alloc(reserved, 0x20), ...chunks]);
        chunks.length = 0;
      }
    }
    describeMessage(record, size, eightBit);
    if (reserved !== undefined) {
      const line = paddedStateLine(record, reserved);
      await writeAt(fd, line, 0);
      written = { line };
      return;
    }
    const content = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const line = stateLine(record);
    await writeAll(fd, [line, content]);
    written = { line, content };
  });
  return written!;
}

function describeMessage(record: QueueRecord, size: number, eightBit: boolean): void {
  record.messageSize = size;
  if (eightBit) record.eightBit = true;
}
