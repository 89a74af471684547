import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import type { Address } from "../smtp/address.js";
import { NO_HEADERS, type MessageHeaders } from "./headers.js";

export type { HeaderField, MessageHeaders } from "./headers.js";

/** Returns the headers of a message, or an empty set for a message whose header block was not parsed. */
export function wrapHeaders(headers: MessageHeaders | undefined): MessageHeaders {
  return headers ?? NO_HEADERS;
}

/**
 * The storage of a received message's bytes until the transaction ends: a
 * buffer, or a spool file when they did not fit the memory budget.
 */
export type MessageBody = { bytes: Buffer; path?: undefined } | { path: string; bytes?: undefined };

/**
 * A message received through DATA. Plugins read it as a stream; storage
 * plugins write `storedCopy()`, which adds the trace headers.
 */
export class Message {
  constructor(
    /** The DATA bytes; a spool file is removed when the transaction ends. */
    private readonly body: MessageBody,
    /** Size of the DATA bytes in octets, after dot-unstuffing. */
    readonly size: number,
    readonly headers: MessageHeaders,
    /** The engine's Received header, folded and ending in CRLF. */
    readonly received: string,
    private readonly sender: Address | null,
  ) {}

  /** Opens the DATA bytes exactly as received (normalised when that is configured). */
  stream(): Readable {
    const { bytes, path } = this.body;
    if (bytes) return Readable.from([bytes], { objectMode: false });
    return createReadStream(path, { highWaterMark: 256 * 1024 });
  }

  /**
   * Returns the stored copy as buffers when the message is in memory, so a
   * storage plugin can write it with one call. For a message in a spool file
   * it returns undefined, and storedCopy() reads the file.
   */
  storedCopyBytes(options: { deliveredTo?: string; returnPath?: boolean } = {}): Buffer[] | undefined {
    const { bytes } = this.body;
    if (!bytes) return undefined;
    return [Buffer.from(this.traceHeaders(options), "utf8"), bytes];
  }

  /** Returns the trace headers that precede the DATA bytes in a stored copy. */
  traceHeaders(options: { deliveredTo?: string; returnPath?: boolean } = {}): string {
    let prefix = "";
    if (options.returnPath !== false) {
      prefix += `Return-Path: <${this.sender ? this.sender.address : ""}>\r\n`;
    }
    if (options.deliveredTo) prefix += `Delivered-To: ${options.deliveredTo}\r\n`;
    return prefix + this.received;
  }

  /**
   * Opens the copy to store: Return-Path, Delivered-To when given, the
   * engine's Received header, then the DATA bytes unchanged.
   */
  storedCopy(options: { deliveredTo?: string; returnPath?: boolean } = {}): Readable {
    const inMemory = this.storedCopyBytes(options);
    if (inMemory) return Readable.from(inMemory, { objectMode: false });
    const prefix = Buffer.from(this.traceHeaders(options), "utf8");
    const body = this.stream();
    return Readable.from(
      (async function* () {
        yield prefix;
        yield* body;
      })(),
      { objectMode: false },
    );
  }
}
