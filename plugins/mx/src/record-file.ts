import { open, unlink, type FileHandle } from "node:fs/promises";

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

/**
 * Creates `file` (it must not exist), lets `write` fill it, and fsyncs it.
 * On failure (a full disk) the partial file is removed.
 */
export async function writeNewFile(file: string, write: (handle: FileHandle) => Promise<void>): Promise<void> {
  const handle = await open(file, "wx", 0o600);
  try {
    await write(handle);
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await unlink(file).catch(() => undefined);
    throw error;
  }
  await handle.close();
}

/** Writes every buffer at the file's current position, looping over short writes. */
export async function writeAll(handle: FileHandle, buffers: Buffer[]): Promise<void> {
  let pending = buffers.filter((buffer) => buffer.length > 0);
  while (pending.length > 0) {
    let { bytesWritten } = await handle.writev(pending);
    while (pending.length > 0 && bytesWritten >= pending[0]!.length) {
      bytesWritten -= pending[0]!.length;
      pending = pending.slice(1);
    }
    if (bytesWritten > 0) pending[0] = pending[0]!.subarray(bytesWritten);
  }
}

/** Appends the bytes of `source` from `offset` to its end to `target`. */
export async function appendFrom(source: string, offset: number, target: FileHandle): Promise<void> {
  const handle = await open(source, "r");
  try {
    const buffer = Buffer.allocUnsafe(COPY_CHUNK);
    for (let position = offset; ; ) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) return;
      await writeAll(target, [buffer.subarray(0, bytesRead)]);
      position += bytesRead;
    }
  } finally {
    await handle.close();
  }
}
