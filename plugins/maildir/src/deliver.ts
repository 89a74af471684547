import { constants } from "node:fs";
import { link, mkdir, open, rename, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { uniqueName } from "./filename.js";

/** Message content to deliver: a stream such as `message.storedCopy()`, or bytes. */
export type DeliverySource = AsyncIterable<Uint8Array | string> | Uint8Array | string;

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
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
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

function startDirectorySync(dir: string): Promise<void> {
  const state: DirectorySync = { running: Promise.resolve(), next: undefined };
  state.running = syncDirectory(dir).finally(() => {
    if (directorySyncs.get(dir) === state) directorySyncs.delete(dir);
  });
  directorySyncs.set(dir, state);
  return state.running;
}

/**
 * Creates `maildir` and its tmp/, new/ and cur/ folders (mode 0700) when they
 * are missing, and fsyncs the parent of every folder it created, so a new
 * mailbox survives a crash as well as the message in it.
 */
export async function ensureMaildir(maildir: string): Promise<void> {
  if (known.has(maildir)) return;
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
}

async function writeAll(handle: FileHandle, source: DeliverySource): Promise<number> {
  if (typeof source === "string" || source instanceof Uint8Array) {
    const bytes = typeof source === "string" ? Buffer.from(source) : source;
    return writeChunk(handle, bytes);
  }
  let size = 0;
  for await (const chunk of source) {
    size += await writeChunk(handle, typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  }
  return size;
}

async function writeChunk(handle: FileHandle, bytes: Uint8Array): Promise<number> {
  let offset = 0;
  while (offset < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset);
    offset += bytesWritten;
  }
  return bytes.length;
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
 * cur/), following the maildir protocol: write to tmp/ under a unique name,
 * fsync the file, move it into new/, fsync new/. When this resolves the
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
  let handle: FileHandle | undefined;
  let moved: string | undefined;
  try {
    handle = await step("open", tmpPath, async () => {
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
    const open = handle;
    const size = await step("write", tmpPath, () => writeAll(open, source));
    await step("fsync", tmpPath, () => open.sync());
    handle = undefined;
    await step("fsync", tmpPath, () => open.close());
    await options.beforeMove?.(tmpPath);

    moved = await step("move", tmpPath, () => moveIntoNew(tmpPath, newDir, name, options.hostname));
    await step("fsync-dir", newDir, () => syncDirectoryShared(newDir));
    return { name: moved, path: path.join(newDir, moved), size };
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await unlink(tmpPath).catch(() => undefined);
    // new/ could not be made durable, so the message is taken back out: the
    // client gets a 4xx reply and sends it again.
    if (moved !== undefined) await unlink(path.join(newDir, moved)).catch(() => undefined);
    if (error instanceof MaildirError) throw error;
    throw new MaildirError(codeOf(error), "write", tmpPath, { cause: error });
  }
}

function openExclusive(file: string): Promise<FileHandle> {
  return open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
}
