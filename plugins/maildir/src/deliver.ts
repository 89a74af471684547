import fs, { constants } from "node:fs";
import { link, mkdir, readdir, rename, stat, unlink } from "node:fs/promises";
import { processAlive } from "@mailroom/core";
import path from "node:path";
import { uniqueName } from "./filename.js";

/**
 * Message content to deliver: a stream such as `message.storedCopy()`, a
 * list of buffers such as `message.storedCopyBytes()`, or bytes.
 */
export type DeliverySource = AsyncIterable<Uint8Array | string> | readonly Uint8Array[] | Uint8Array | string;

export interface DeliverOptions {
  /** Host name for the file name; the machine's host name by default. */
  hostname?: string;
  /**
   * Runs once the file in tmp/ is written, fsync'd and closed, before it
   * moves into new/. For tests that stop a delivery at that point.
   */
  beforeMove?: (tmpPath: string) => void | Promise<void>;
}

/** A message stored in a maildir. */
export interface Delivery {
  /** File name in new/. */
  name: string;
  /** Full path of the file in new/. */
  path: string;
  /** Octets written. */
  size: number;
}

/** A failed delivery: the errno code, the step and the path it failed on. */
export class MaildirError extends Error {
  override readonly name = "MaildirError";
  constructor(
    /** errno code such as ENOSPC, or "EUNKNOWN". */
    readonly code: string,
    readonly step: "mkdir" | "open" | "write" | "fsync" | "move" | "fsync-dir",
    readonly path: string,
    options: { cause: unknown },
  ) {
    super(`maildir ${step} failed on ${path}: ${code}`, options);
  }

  /** True when the disk or the user's quota is full. */
  get isFull(): boolean {
    return this.code === "ENOSPC" || this.code === "EDQUOT";
  }
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "EUNKNOWN";
}

async function step<T>(
  name: MaildirError["step"],
  where: string,
  action: () => Promise<T>,
): Promise<T> {
  try {
    return await action();
  } catch (error) {
    if (error instanceof MaildirError) throw error;
    throw new MaildirError(codeOf(error), name, where, { cause: error });
  }
}

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const known = new Set<string>();

/** Writes a directory's entries to disk. */
async function syncDirectory(dir: string): Promise<void> {
  const fd = await openFile(dir, constants.O_RDONLY | constants.O_DIRECTORY, 0);
  try {
    await syncFile(fd);
  } finally {
    await closeFile(fd);
  }
}

interface DirectorySync {
  running: Promise<void>;
  next: Promise<void> | undefined;
}
const directorySyncs = new Map<string, DirectorySync>();

/**
 * Fsyncs a directory so that every entry made before the call is on disk,
 * sharing fsyncs between concurrent deliveries (group commit). A caller that
 * arrives while an fsync runs waits for the next one, which starts after the
 * running one ends and so after the caller's rename; every caller arriving
 * meanwhile joins that same next fsync. A failed fsync fails all who share it.
 */
function syncDirectoryShared(dir: string): Promise<void> {
  const current = directorySyncs.get(dir);
  if (current === undefined) return startDirectorySync(dir);
  current.next ??= current.running.then(
    () => startDirectorySync(dir),
    () => startDirectorySync(dir),
  );
  return current.next;
}

let directoryFsyncs = 0;

/** Counts the fsyncs of new/ folders this process started, to show how many deliveries shared one. */
export function directoryFsyncCount(): number {
  return directoryFsyncs;
}

function startDirectorySync(dir: string): Promise<void> {
  directoryFsyncs += 1;
  const state: DirectorySync = { running: Promise.resolve(), next: undefined };
  state.running = syncDirectory(dir).finally(() => {
    if (directorySyncs.get(dir) === state) directorySyncs.delete(dir);
  });
  directorySyncs.set(dir, state);
  return state.running;
}

/** Mailboxes being created, so concurrent first deliveries wait for the same fsyncs. */
const creating = new Map<string, Promise<void>>();

/**
 * Creates `maildir` and its tmp/, new/ and cur/ folders (mode 0700) when they
 * are missing, and fsyncs the parent of every folder it created, so a new
 * mailbox survives a crash as well as the message in it. The first call for
 * a mailbox in this process also starts a clean-up of its tmp/ folder.
 */
export async function ensureMaildir(maildir: string): Promise<void> {
  if (known.has(maildir)) return;
  let pending = creating.get(maildir);
  if (!pending) {
    pending = createMaildir(maildir).finally(() => creating.delete(maildir));
    creating.set(maildir, pending);
  }
  await pending;
}

async function createMaildir(maildir: string): Promise<void> {
  await step("mkdir", maildir, async () => {
    const first = await mkdir(maildir, { recursive: true, mode: DIR_MODE });
    let created = first !== undefined;
    for (const sub of ["tmp", "new", "cur"]) {
      try {
        await mkdir(path.join(maildir, sub), { mode: DIR_MODE });
        created = true;
      } catch (error) {
        if (codeOf(error) !== "EEXIST") throw error;
      }
    }
    if (created) await syncDirectory(maildir);
    if (first !== undefined) {
      // Every folder from the first one created up to maildir is new; its
      // parent needs its entry written too.
      for (let dir = path.dirname(maildir); ; dir = path.dirname(dir)) {
        await syncDirectory(dir);
        if (dir === path.dirname(first) || dir === path.dirname(dir)) break;
      }
    }
  });
  known.add(maildir);
  const cleanup: Promise<void> = cleanTmp(path.join(maildir, "tmp")).finally(() => cleanups.delete(cleanup));
  cleanups.add(cleanup);
}

/** Age after which a file in tmp/ counts as abandoned, the maildir convention (36 hours). */
const TMP_MAX_AGE_MS = 36 * 3600 * 1000;
/** A name this plugin writes, with the writer's pid in the P field (see uniqueName). */
const OWN_NAME = /^\d+\.M\d+P(\d+)Q\d+R[0-9a-f]+\./;
const cleanups = new Set<Promise<void>>();

/**
 * Removes files from tmp/ that no delivery will finish: ones this plugin
 * wrote in a process that is gone (a kill -9 skips the removal), and any
 * file older than 36 hours. Errors only leave the files in place.
 */
async function cleanTmp(tmp: string): Promise<void> {
  try {
    const cutoff = Date.now() - TMP_MAX_AGE_MS;
    for (const name of await readdir(tmp)) {
      const owner = OWN_NAME.exec(name)?.[1];
      const file = path.join(tmp, name);
      let abandoned = owner !== undefined && Number(owner) !== process.pid && !processAlive(Number(owner));
      if (!abandoned) {
        const info = await stat(file).catch(() => undefined);
        abandoned = info !== undefined && info.mtimeMs < cutoff;
      }
      if (abandoned) await unlink(file).catch(() => undefined);
    }
  } catch {
    // An unreadable tmp/ fails the delivery itself, with a clear error.
  }
}

/** Waits for the tmp/ clean-ups running now; for tests. */
export async function tmpCleanupsDone(): Promise<void> {
  await Promise.all([...cleanups]);
}

// The file operations of a delivery work on raw descriptors with callbacks,
// which cost less CPU per call than FileHandle's methods in the profiles.
function openFile(file: string, flags: number, mode: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, flags, mode, (error, fd) => (error ? reject(error) : resolve(fd))));
}

function syncFile(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fsync(fd, (error) => (error ? reject(error) : resolve())));
}

function closeFile(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (error) => (error ? reject(error) : resolve())));
}

function writeBuffers(fd: number, buffers: readonly Uint8Array[]): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.writev(fd, buffers as Uint8Array[], (error, written) => (error ? reject(error) : resolve(written))),
  );
}

/** Writes every byte of the buffers, continuing after a short write. */
async function writeAllBuffers(fd: number, buffers: readonly Uint8Array[]): Promise<number> {
  let pending = buffers.filter((buffer) => buffer.length > 0);
  let written = 0;
  while (pending.length > 0) {
    let count = await writeBuffers(fd, pending);
    written += count;
    const rest: Uint8Array[] = [];
    for (const buffer of pending) {
      if (count >= buffer.length) {
        count -= buffer.length;
        continue;
      }
      rest.push(count > 0 ? buffer.subarray(count) : buffer);
      count = 0;
    }
    pending = rest;
  }
  return written;
}

async function writeAll(fd: number, source: DeliverySource): Promise<number> {
  if (typeof source === "string") return writeAllBuffers(fd, [Buffer.from(source)]);
  if (source instanceof Uint8Array) return writeAllBuffers(fd, [source]);
  if (Array.isArray(source)) return writeAllBuffers(fd, source);
  let size = 0;
  for await (const chunk of source as AsyncIterable<Uint8Array | string>) {
    size += await writeAllBuffers(fd, [typeof chunk === "string" ? Buffer.from(chunk) : chunk]);
  }
  return size;
}

/** Link errors that mean the file system has no hard links; rename is used instead. */
const NO_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EMLINK", "EXDEV"]);

/**
 * Moves the file from tmp/ into new/ without replacing anything there: it is
 * hard-linked under a name that must not exist yet (a fresh name is drawn if
 * it does), then the tmp/ entry is removed. Where hard links are not
 * supported it falls back to rename. Returns the name in new/.
 */
async function moveIntoNew(tmpPath: string, newDir: string, name: string, hostname?: string): Promise<string> {
  let target = name;
  for (let attempt = 0; ; attempt++) {
    try {
      await link(tmpPath, path.join(newDir, target));
      break;
    } catch (error) {
      const code = codeOf(error);
      if (code === "EEXIST" && attempt < 5) {
        target = uniqueName(hostname === undefined ? {} : { hostname });
        continue;
      }
      if (!NO_LINKS.has(code)) throw error;
      await rename(tmpPath, path.join(newDir, target));
      return target;
    }
  }
  // The message is in new/ now. A stale tmp/ entry is only clutter, which
  // maildir readers clean up, so a failure here does not fail the delivery.
  await unlink(tmpPath).catch(() => undefined);
  return target;
}

/**
 * Delivers one message into a maildir (the folder that contains tmp/, new/ and
 * cur/), following the maildir protocol: write to tmp/ under a unique name
 * with synchronous writes, move it into new/, fsync new/. When this resolves the
 * message is on disk; when it rejects (with a MaildirError) nothing was left
 * in tmp/ or new/.
 */
export async function deliverToMaildir(
  maildir: string,
  source: DeliverySource,
  options: DeliverOptions = {},
): Promise<Delivery> {
  await ensureMaildir(maildir);
  const nameOptions = options.hostname === undefined ? {} : { hostname: options.hostname };
  const newDir = path.join(maildir, "new");

  let name = uniqueName(nameOptions);
  let tmpPath = path.join(maildir, "tmp", name);
  let fd: number | undefined;
  let moved: string | undefined;
  try {
    fd = await step("open", tmpPath, async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await openExclusive(tmpPath);
        } catch (error) {
          if (codeOf(error) === "ENOENT" && attempt === 0) {
            // Someone removed the folders since they were made; make them again.
            known.delete(maildir);
            await ensureMaildir(maildir);
            continue;
          }
          if (codeOf(error) !== "EEXIST" || attempt >= 5) throw error;
          name = uniqueName(nameOptions);
          tmpPath = path.join(maildir, "tmp", name);
        }
      }
    });
    const open = fd;
    // With O_DSYNC each write returns once its bytes and the file size are
    // on disk, so the file needs no fsync of its own.
    const size = await step("write", tmpPath, () => writeAll(open, source));
    if (!SYNCHRONOUS_WRITES) await step("fsync", tmpPath, () => syncFile(open));
    fd = undefined;
    await step("fsync", tmpPath, () => closeFile(open));
    await options.beforeMove?.(tmpPath);

    moved = await step("move", tmpPath, () => moveIntoNew(tmpPath, newDir, name, options.hostname));
    await step("fsync-dir", newDir, () => syncDirectoryShared(newDir));
    return { name: moved, path: path.join(newDir, moved), size };
  } catch (error) {
    if (fd !== undefined) await closeFile(fd).catch(() => undefined);
    await unlink(tmpPath).catch(() => undefined);
    // new/ could not be made durable, so the message is taken back out: the
    // client gets a 4xx reply and sends it again.
    if (moved !== undefined) await unlink(path.join(newDir, moved)).catch(() => undefined);
    if (error instanceof MaildirError) throw error;
    throw new MaildirError(codeOf(error), "write", tmpPath, { cause: error });
  }
}

/** O_DSYNC where the platform has it (Linux, macOS, the BSDs); elsewhere the file is fsync'd. */
const SYNCHRONOUS_WRITES = typeof constants.O_DSYNC === "number";

function openExclusive(file: string): Promise<number> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (SYNCHRONOUS_WRITES ? constants.O_DSYNC : 0);
  return openFile(file, flags, FILE_MODE);
}
