const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;
const LF_DOT = Buffer.from("\n.", "latin1");
const LONE_DOT = Buffer.from(".", "latin1");
const DOT_CR = Buffer.from(".\r", "latin1");

/** The outcome of DataDecoder#push for one chunk. */
export interface DecodedChunk {
  /** Message bytes of the chunk, dot-unstuffed and in order. They may share memory with the chunk. */
  parts: Buffer[];
  /** The bytes after the end-of-data line, or undefined while the message goes on. */
  rest: Buffer | undefined;
}

/**
 * Decodes the bytes of SMTP DATA as they arrive in chunks of any size.
 *
 * A line starts at the beginning of DATA or after an LF. At a line start,
 * a dot followed by CR LF ends the data when the line start follows CRLF or
 * the DATA command, so `\n.\r\n`, `\r\n.\n` and `\r.\r\n` never end it. A
 * dot followed by any byte other than CR or LF is removed, as RFC 5321
 * section 4.5.2 has the receiver do, so both `..x` and an unstuffed `.x`
 * lose their first dot. A dot followed by CR or LF without ending the data
 * stays in the message. Every other byte passes through unchanged, bare CR
 * and LF included, so the spool can still find and reject them.
 */
export class DataDecoder {
  /** The next byte starts a line. */
  private atLineStart = true;
  /** The current line start follows CRLF or the DATA command. */
  private afterCrlf = true;
  /** A dot at a line start, held until the next byte shows what it is. */
  private heldDot = false;
  /** A dot and CR at a line start after CRLF, held until the next byte shows whether they end the data. */
  private heldDotCr = false;
  /** The last byte of the previous chunk; 0 before the first chunk. */
  private lastByte = 0;

  /** Decodes one chunk. After a result with `rest` the message is complete and the decoder is done. */
  push(chunk: Buffer): DecodedChunk {
    const parts: Buffer[] = [];
    let position = 0;
    while (position < chunk.length) {
      if (this.heldDotCr) {
        this.heldDotCr = false;
        if (chunk[position] === LF) return { parts, rest: chunk.subarray(position + 1) };
        parts.push(DOT_CR);
        continue;
      }

      if (this.heldDot) {
        this.heldDot = false;
        const next = chunk[position];
        if (next === CR && this.afterCrlf) {
          this.heldDotCr = true;
          position += 1;
          continue;
        }
        // A line that is only a dot, ended by a bare CR or LF, keeps it.
        // Before any other byte the dot is dot-stuffing and is dropped.
        if (next === CR || next === LF) parts.push(LONE_DOT);
      } else if (this.atLineStart) {
        this.atLineStart = false;
        if (chunk[position] === DOT) {
          this.heldDot = true;
          position += 1;
          continue;
        }
      }

      // Copy up to the next line that starts with a dot, which is rare, so
      // a chunk usually passes on as one part without copying.
      const found = chunk.indexOf(LF_DOT, position);
      if (found === -1) {
        parts.push(chunk.subarray(position));
        if (chunk[chunk.length - 1] === LF) {
          this.atLineStart = true;
          this.afterCrlf = this.byteBefore(chunk, chunk.length - 1) === CR;
        }
        break;
      }
      parts.push(chunk.subarray(position, found + 1));
      this.afterCrlf = this.byteBefore(chunk, found) === CR;
      this.heldDot = true;
      position = found + 2;
    }
    if (chunk.length > 0) this.lastByte = chunk[chunk.length - 1]!;
    return { parts, rest: undefined };
  }

  /** Returns the byte on the wire before `chunk[index]`, which may be the last byte of the previous chunk. */
  private byteBefore(chunk: Buffer, index: number): number {
    return index > 0 ? chunk[index - 1]! : this.lastByte;
  }
}
