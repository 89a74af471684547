import { isAscii } from "node:buffer";
import fs from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

/**
 * A queue file is one line of JSON (the record state, which JSON.stringify
 * writes without a raw line feed), a line feed, then the message.
 */
const LINE_FEED = 0x0a;
const FIRST_READ = 16 * 1024;
/** Maximum length of a state line; a longer one means a damaged file. */
const MAX_STATE_LINE = 16 * 1024 * 1024;
const COPY_CHUNK = 256 * 1024;

/** Returns the state line of an open queue file and the offset where its message starts. */
export async function readStateLine(handle: FileHandle): Promise<{ text: string; bodyOffset: number }> {
  let buffer = Buffer.allocUnsafe(FIRST_READ);
  let length = 0;
  for (;;) {
    const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
    const end = buffer.indexOf(LINE_FEED, length);
    length += bytesRead;
    if (end !== -1 && end < length) return { text: buffer.toString("utf8", 0, end), bodyOffset: end + 1 };
    if (bytesRead === 0) throw new Error("queue file ends before the end of its state line");
    if (length === buffer.length) {
      if (buffer.length >= MAX_STATE_LINE) throw new Error(`queue file state line is longer than ${MAX_STATE_LINE} bytes`);
      const larger = Buffer.allocUnsafe(buffer.length * 4);
      buffer.copy(larger, 0, 0, length);
      buffer = larger;
    }
  }
}

/** Reads the state line of the queue file at `file`. */
export async function readStateLineOf(file: string): Promise<{ text: string; bodyOffset: number }> {
  const handle = await open(file, "r");
  try {
    return await readStateLine(handle);
  } finally {
    await handle.close();
  }
}

// The queue's hot path uses the callback API on file descriptors, because it
// costs the event loop less than FileHandle from fs/promises. Measured on
// Node 20 on a 2-CPU VM, 3000 sequences of open, writev, fsync, close, rename
// and unlink, 20 at a time, took about 75 µs of event-loop time each instead
// of 105 µs.

function settle<T>(resolve: (value: T) => void, reject: (error: Error) => void) {
  return (error: Error | null, value?: T) => (error ? reject(error) : resolve(value as T));
}

/** Renames `from` to `to`, replacing `to`. */
export function renamePath(from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => fs.rename(from, to, settle(resolve, reject)));
}

/** Removes a file. */
export function unlinkPath(file: string): Promise<void> {
  return new Promise((resolve, reject) => fs.unlink(file, settle(resolve, reject)));
}

function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, settle(resolve, reject)));
}

/**
 * Creates `file` (it must not exist), lets `write` fill it through its file
 * descriptor, and fsyncs it. On failure (a full disk) the partial file is
 * removed.
 */
export async function writeNewFile(file: string, write: (fd: number) => Promise<void>): Promise<void> {
  const fd = await new Promise<number>((resolve, reject) => fs.open(file, "wx", 0o600, settle(resolve, reject)));
  try {
    await write(fd);
    await new Promise<void>((resolve, reject) => fs.fsync(fd, settle(resolve, reject)));
  } catch (error) {
    await closeFd(fd).catch(() => undefined);
    await unlinkPath(file).catch(() => undefined);
    throw error;
  }
  await closeFd(fd);
}

const CREATE_SYNCED = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_DSYNC;

/**
 * Creates `file` (it must not exist) with `buffers` as its content, durable
 * when this returns. The file is opened with O_DSYNC, so each write returns
 * once its data and the metadata needed to read it back (the size) are on
 * disk, as fdatasync would make them, which saves the fsync call. On failure
 * the partial file is removed.
 */
export async function writeNewFileSynced(file: string, buffers: Buffer[]): Promise<void> {
  const fd = await new Promise<number>((resolve, reject) => fs.open(file, CREATE_SYNCED, 0o600, settle(resolve, reject)));
  try {
    await writeAll(fd, buffers);
  } catch (error) {
    await closeFd(fd).catch(() => undefined);
    await unlinkPath(file).catch(() => undefined);
    throw error;
  }
  // The data is already on disk, so close only releases the descriptor. Done
  // in place, it saves a thread-pool round trip.
  fs.closeSync(fd);
}

/** Writes every buffer at the file's current position, looping over short writes. */
export async function writeAll(fd: number, buffers: Buffer[]): Promise<void> {
  let pending = buffers.filter((buffer) => buffer.length > 0);
  while (pending.length > 0) {
    let written = await new Promise<number>((resolve, reject) => fs.writev(fd, pending, settle(resolve, reject)));
    while (pending.length > 0 && written >= pending[0]!.length) {
      written -= pending[0]!.length;
      pending = pending.slice(1);
    }
    if (written > 0) pending[0] = pending[0]!.subarray(written);
  }
}

/**
 * Appends the bytes of `source` from `offset` to `target`: `length` bytes,
 * or all of them to the end of the file without it. Throws when the file
 * ends before `length` bytes were copied.
 */
export async function appendFrom(source: string, offset: number, target: number, length?: number): Promise<void> {
  const handle = await open(source, "r");
  try {
    const buffer = Buffer.allocUnsafe(COPY_CHUNK);
    let copied = 0;
    for (let position = offset; length === undefined || copied < length; ) {
      const chunkLength = length === undefined ? buffer.length : Math.min(buffer.length, length - copied);
      const { bytesRead } = await handle.read(buffer, 0, chunkLength, position);
      if (bytesRead === 0) break;
      await writeAll(target, [buffer.subarray(0, bytesRead)]);
      position += bytesRead;
      copied += bytesRead;
    }
    if (length !== undefined && copied < length) {
      throw new Error(`${source} ends after ${copied} of the ${length} message octets that its state line records`);
    }
  } finally {
    await handle.close();
  }
}

/** Checks whether the bytes of an open file from `start` to `end` contain an octet above 127. */
export async function hasEightBitOctets(handle: FileHandle, start: number, end: number): Promise<boolean> {
  const buffer = Buffer.allocUnsafe(COPY_CHUNK);
  for (let position = start; position < end; ) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, end - position), position);
    if (bytesRead === 0) return false;
    if (!isAscii(buffer.subarray(0, bytesRead))) return true;
    position += bytesRead;
  }
  return false;
}

/** Checks whether an open file of `size` bytes ends in CRLF after `start`. */
export async function endsWithCrlf(handle: FileHandle, start: number, size: number): Promise<boolean> {
  if (size - start < 2) return false;
  const tail = Buffer.alloc(2);
  const { bytesRead } = await handle.read(tail, 0, 2, size - 2);
  return bytesRead === 2 && tail[0] === 0x0d && tail[1] === 0x0a;
}

/** Writes `buffer` at `position` of the file, leaving the file position as it was (pwrite). */
export async function writeAt(fd: number, buffer: Buffer, position: number): Promise<void> {
  for (let done = 0; done < buffer.length; ) {
    done += await new Promise<number>((resolve, reject) =>
      fs.write(fd, buffer, done, buffer.length - done, position + done, settle(resolve, reject)),
    );
  }
}
