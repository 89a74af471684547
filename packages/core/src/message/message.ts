import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import type { Headers } from "mailsplit";
import type { Address } from "../smtp/address.js";

/** Parsed header block of a message, in the order the lines arrived. */
export interface MessageHeaders {
  /** Returns every line of the named header ("Subject: ...", unfolded as sent). */
  get(name: string): string[];
  /** Returns the decoded value of the first header with that name, or "". */
  getFirst(name: string): string;
  /** Returns every header line with its lower-case key. */
  list(): { key: string; line: string }[];
  /** Counts the header lines with that name. */
  count(name: string): number;
}

export function wrapHeaders(headers: Headers | undefined): MessageHeaders {
  return {
    get: (name) => headers?.get(name) ?? [],
    getFirst: (name) => headers?.getFirst(name) ?? "",
    list: () => headers?.getList() ?? [],
    count: (name) => headers?.get(name).length ?? 0,
  };
}

/**
 * A message received through DATA, spooled to a file. Plugins read it as a
 * stream; storage plugins write `storedCopy()`, which adds the trace headers.
 */
export class Message {
  constructor(
    /** Spool file with the DATA bytes, removed when the transaction ends. */
    readonly path: string,
    /** Size of the DATA bytes in octets, after dot-unstuffing. */
    readonly size: number,
    readonly headers: MessageHeaders,
    /** The engine's Received header, folded and ending in CRLF. */
    readonly received: string,
    private readonly sender: Address | null,
  ) {}

  /** Opens the DATA bytes exactly as received (normalised when that is configured). */
  stream(): Readable {
    return createReadStream(this.path, { highWaterMark: 256 * 1024 });
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
