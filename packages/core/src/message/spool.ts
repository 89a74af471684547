import { createWriteStream, type WriteStream } from "node:fs";
import { unlink } from "node:fs/promises";
import path from "node:path";
import { ParsedHeaders, type HeaderField, type MessageHeaders } from "./headers.js";
import type { MessageBody } from "./message.js";

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from("\r\n");
const CR_BYTE = Buffer.from([CR]);

/** The size of the header block kept for plugins, in octets. */
export const MAX_HEADER_BLOCK = 1024 * 1024;

/**
 * Splits a header block into header fields, each with its folded
 * continuation lines, in linear time. (mailsplit 5.4.6's Splitter and
 * Headers parsers take quadratic time on many folded lines or long runs of
 * bare CRs, which a client controls.)
 */
export function parseHeaderBlock(block: Buffer): MessageHeaders {
  const lines = block.toString("latin1").replace(/[\r\n]+$/, "").split(/\r?\n/);
  const fields: HeaderField[] = [];
  let parts: string[] = [];
  const flush = () => {
    if (parts.length === 0) return;
    const line = parts.join("\r\n");
    const colon = line.indexOf(":");
    fields.push({ key: (colon === -1 ? "" : line.slice(0, colon)).toLowerCase().trim(), line });
    parts = [];
  };
  for (const line of lines) {
    const first = line.charAt(0);
    if ((first === " " || first === "\t") && parts.length > 0) {
      parts.push(line);
      continue;
    }
    flush();
    if (line !== "") parts.push(line);
  }
  flush();
  return new ParsedHeaders(fields);
}

/** The treatment of line endings other than CRLF inside a message. */
export type LineEndingPolicy = "strict" | "normalize";

/**
 * The memory that messages may use while they are received, shared by every
 * session of a server. A message that does not fit goes to a spool file.
 */
export class MemoryBudget {
  private used = 0;

  constructor(
    /** Octets all messages in memory may take together; 0 keeps every message in a file. */
    public total: number,
    /** Octets one message may take in memory before it moves to a file. */
    public perMessage: number,
  ) {}

  /** Reserves `octets` if they fit; the caller gives them back with release(). */
  take(octets: number): boolean {
    if (this.used + octets > this.total) return false;
    this.used += octets;
    return true;
  }

  release(octets: number): void {
    this.used -= octets;
  }

  /** Octets reserved now. */
  get inUse(): number {
    return this.used;
  }
}

export interface SpoolOptions {
  dir: string;
  name: string;
  maxSize: number;
  maxLineLength: number;
  lineEndings: LineEndingPolicy;
  /** Keeps messages in memory within this budget; without one every message goes to a file. */
  memory?: MemoryBudget;
}

/** The findings of the spool about a finished message. */
export interface SpoolResult {
  /** The stored bytes: in memory, or in the spool file when they did not fit. */
  body: MessageBody;
  /** Octets received, counted even after the size limit was passed. */
  received: number;
  /** Octets stored (after normalisation). */
  size: number;
  tooBig: boolean;
  lineTooLong: boolean;
  /** A bare CR or LF was seen (refused in strict mode, rewritten otherwise). */
  bareLineEnding: boolean;
  headers: MessageHeaders | undefined;
}

/**
 * Receives the dot-unstuffed DATA bytes, checks size, line length and line
 * endings, and keeps the header block for plugins. The bytes stay in memory
 * while they fit the memory budget and move to a spool file when they do
 * not. Once a limit is passed it keeps counting but stops storing, so the
 * reply can wait for the final dot without buffering anything.
 */
export class SpoolWriter {
  /** The spool file's path, used only if the message moves to a file. */
  readonly path: string;
  private readonly options: SpoolOptions;
  private file: WriteStream | undefined;
  private fileError: Error | undefined;
  /** Bytes kept in memory, and the octets of the budget they hold. */
  private chunks: Buffer[] = [];
  private reserved = 0;
  private finished = false;
  private received = 0;
  private written = 0;
  private lineLength = 0;
  private pendingCR = false;
  private tooBig = false;
  private lineTooLong = false;
  private bareLineEnding = false;
  /** Header lines collected so far; undefined after the blank line, or once the message is rejected. */
  private headerBlock: Buffer[] | undefined = [];
  private headerBytes = 0;
  /** The current header line did not end in the previous chunk. */
  private headerLineOpen = false;
  private headers: MessageHeaders | undefined;

  constructor(options: SpoolOptions) {
    this.options = options;
    this.path = path.join(options.dir, options.name);
  }

  /** True once the bytes went to the spool file. */
  get inFile(): boolean {
    return this.file !== undefined;
  }

  /** Collects the header block: every line up to the first empty one, within MAX_HEADER_BLOCK. */
  private collectHeaders(bytes: Buffer): void {
    const block = this.headerBlock;
    if (!block) return;
    let start = 0;
    while (start < bytes.length) {
      const lf = bytes.indexOf(LF, start);
      const end = lf === -1 ? bytes.length : lf + 1;
      const line = bytes.subarray(start, end);
      const empty = !this.headerLineOpen && lf !== -1 && (end - start === 1 || (end - start === 2 && line[0] === CR));
      if (empty) return this.finishHeaders();
      if (this.headerBytes + line.length > MAX_HEADER_BLOCK) return this.finishHeaders();
      block.push(line);
      this.headerBytes += line.length;
      this.headerLineOpen = lf === -1;
      start = end;
    }
  }

  private finishHeaders(): void {
    const block = this.headerBlock;
    if (!block) return;
    this.headerBlock = undefined;
    let joined = Buffer.concat(block);
    // A header line cut by the size limit or by the end of the message is dropped.
    if (this.headerLineOpen) joined = joined.subarray(0, joined.lastIndexOf(LF) + 1);
    this.headers = parseHeaderBlock(joined);
  }

  /** Scans a chunk for line endings and long lines; returns the bytes to store. */
  private inspect(input: Buffer): Buffer {
    // A CR at the end of a chunk is held back until the next byte shows
    // whether it starts a CRLF.
    const chunk = this.pendingCR ? Buffer.concat([CR_BYTE, input]) : input;
    this.pendingCR = false;
    let end = chunk.length;
    if (end > 0 && chunk[end - 1] === CR) {
      this.pendingCR = true;
      end -= 1;
    }

    const normalize = this.options.lineEndings === "normalize";
    const parts: Buffer[] = [];
    let copied = 0;

    // Jump from one CR or LF to the next with indexOf: the bytes between them
    // only add to the line length.
    const max = this.options.maxLineLength;
    let nextLF = chunk.indexOf(LF);
    let nextCR = chunk.indexOf(CR);
    let i = 0;
    while (i < end) {
      if (nextLF !== -1 && nextLF < i) nextLF = chunk.indexOf(LF, i);
      if (nextCR !== -1 && nextCR < i) nextCR = chunk.indexOf(CR, i);
      let stop = end;
      if (nextLF !== -1 && nextLF < stop) stop = nextLF;
      if (nextCR !== -1 && nextCR < stop) stop = nextCR;
      if (stop > i) {
        this.lineLength += stop - i;
        if (this.lineLength > max) this.lineTooLong = true;
        i = stop;
        if (i >= end) break;
      }

      const byte = chunk[i];
      const bare =
        (byte === LF && (i === 0 || chunk[i - 1] !== CR)) ||
        (byte === CR && chunk[i + 1] !== LF);
      if (bare) {
        this.bareLineEnding = true;
        this.lineLength = 0;
        if (normalize) {
          parts.push(chunk.subarray(copied, i), CRLF);
          copied = i + 1;
        }
      } else if (byte === LF) {
        this.lineLength = 0;
      }
      i += 1;
    }

    if (parts.length === 0) return chunk.subarray(0, end);
    parts.push(chunk.subarray(copied, end));
    return Buffer.concat(parts);
  }

  private get refusing(): boolean {
    return (
      this.tooBig ||
      this.lineTooLong ||
      (this.bareLineEnding && this.options.lineEndings === "strict")
    );
  }

  /**
   * Takes the next chunk of DATA bytes. Returns a promise when the spool
   * file needs to drain before the next chunk, otherwise undefined.
   */
  write(chunk: Buffer): Promise<void> | undefined {
    if (this.finished) throw new Error("write after finish");
    this.received += chunk.length;
    if (this.received > this.options.maxSize) this.tooBig = true;

    const bytes = this.inspect(chunk);
    // A message that will be rejected needs no headers and no storage.
    if (this.refusing) {
      this.headerBlock = undefined;
      this.drop();
      return undefined;
    }
    this.collectHeaders(bytes);
    return this.store(bytes);
  }

  /** Ends the message and returns what the scan found; closes the spool file if there is one. */
  async finish(): Promise<SpoolResult> {
    if (this.finished) throw new Error("finish called twice");
    this.finished = true;
    if (this.pendingCR) {
      this.pendingCR = false;
      this.bareLineEnding = true;
      const tail = this.options.lineEndings === "normalize" ? CRLF : CR_BYTE;
      if (!this.refusing) {
        this.collectHeaders(tail);
        await this.store(tail);
      }
    }
    // A message without a blank line after its headers is all header.
    if (this.refusing) {
      this.headerBlock = undefined;
      this.drop();
    } else {
      this.finishHeaders();
    }

    let body: MessageBody;
    if (this.file) {
      const file = this.file;
      await new Promise<void>((resolve, reject) => {
        if (this.fileError) return reject(this.fileError);
        file.end((error?: Error | null) => (error ? reject(error) : resolve()));
      });
      body = { path: this.path };
    } else {
      const chunks = this.chunks;
      const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.written);
      body = { bytes };
      this.chunks = [bytes];
    }
    return {
      body,
      received: this.received,
      size: this.written,
      tooBig: this.tooBig,
      lineTooLong: this.lineTooLong,
      bareLineEnding: this.bareLineEnding,
      headers: this.headers,
    };
  }

  /** Frees the memory and deletes the spool file, ignoring one that is already gone. */
  async remove(): Promise<void> {
    this.finished = true;
    this.drop();
    const file = this.file;
    if (!file) return;
    // The file is opened asynchronously: wait until it is closed, or an open
    // still in flight would create it again after the unlink.
    if (!file.closed) {
      const closed = new Promise<void>((resolve) => file.once("close", () => resolve()));
      file.destroy();
      await closed;
    }
    // unlink directly: rm({ force }) costs two extra lstat calls per message.
    await unlink(this.path).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOENT") throw error;
    });
  }

  /** Gives the memory of the kept bytes back to the budget. */
  private drop(): void {
    this.chunks = [];
    if (this.reserved > 0) {
      this.options.memory?.release(this.reserved);
      this.reserved = 0;
    }
  }

  private store(bytes: Buffer): Promise<void> | undefined {
    if (bytes.length === 0) return undefined;
    this.written += bytes.length;
    if (!this.file) {
      const memory = this.options.memory;
      if (memory && this.written <= memory.perMessage && memory.take(bytes.length)) {
        this.reserved += bytes.length;
        this.chunks.push(bytes);
        return undefined;
      }
      this.openFile();
    }
    return this.writeFile(bytes);
  }

  /** Moves the message to the spool file: from here on every byte goes there. */
  private openFile(): void {
    const file = createWriteStream(this.path, { flags: "wx", mode: 0o600 });
    file.on("error", (error) => {
      this.fileError ??= error;
    });
    this.file = file;
    const inMemory = this.chunks;
    this.drop();
    for (const chunk of inMemory) file.write(chunk);
  }

  private writeFile(bytes: Buffer): Promise<void> | undefined {
    const file = this.file!;
    if (this.fileError) return Promise.reject(this.fileError);
    if (file.write(bytes)) return undefined;
    return new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        file.off("error", onError);
        resolve();
      };
      const onError = (error: Error) => {
        file.off("drain", onDrain);
        reject(error);
      };
      file.once("drain", onDrain);
      file.once("error", onError);
    });
  }
}
