import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { DataDecoder } from "./data-decoder.js";

const RUNS = Number(process.env.MAILROOM_FUZZ_RUNS ?? 0) || 1000;

/** Feeds `chunks` to a new decoder and returns the message and the bytes after the final dot. */
function decode(chunks: string[]): { message: string; rest: string | undefined } {
  const decoder = new DataDecoder();
  const parts: Buffer[] = [];
  for (const [index, chunk] of chunks.entries()) {
    const result = decoder.push(Buffer.from(chunk, "latin1"));
    parts.push(...result.parts);
    if (result.rest !== undefined) {
      const rest = result.rest.toString("latin1") + chunks.slice(index + 1).join("");
      return { message: Buffer.concat(parts).toString("latin1"), rest };
    }
  }
  return { message: Buffer.concat(parts).toString("latin1"), rest: undefined };
}

/**
 * Decodes byte by byte as RFC 5321 section 4.5.2 states the rules, for
 * comparison with the decoder. Input must not end in a dot at a line start.
 */
function reference(input: string): { message: string; rest: string | undefined } {
  let message = "";
  let lineStart = true;
  let afterCrlf = true;
  for (let i = 0; i < input.length; i++) {
    const byte = input[i]!;
    if (lineStart) {
      lineStart = false;
      if (byte === ".") {
        const next = input[i + 1];
        if (afterCrlf && next === "\r" && input[i + 2] === "\n") return { message, rest: input.slice(i + 3) };
        if (next !== "\r" && next !== "\n") continue;
      }
    }
    message += byte;
    if (byte === "\n") {
      lineStart = true;
      afterCrlf = i > 0 && input[i - 1] === "\r";
    }
  }
  return { message, rest: undefined };
}

/** Returns every way to cut `input` into two chunks, plus the split into single bytes. */
function splits(input: string): string[][] {
  const result: string[][] = [[input], input.split("")];
  for (let cut = 1; cut < input.length; cut++) result.push([input.slice(0, cut), input.slice(cut)]);
  return result;
}

describe("DataDecoder", () => {
  const cases: [string, string, string, string | undefined][] = [
    ["unstuffed dot", "a\r\n.x\r\n.\r\n", "a\r\nx\r\n", ""],
    ["stuffed dot", "a\r\n..x\r\n.\r\n", "a\r\n.x\r\n", ""],
    ["stuffed lone dot", "..\r\n.\r\n", ".\r\n", ""],
    ["dot at data start", ".x\r\n.\r\n", "x\r\n", ""],
    ["empty message", ".\r\nNOOP\r\n", "", "NOOP\r\n"],
    ["pipelined commands", "a\r\n.\r\nRSET\r\nQUIT\r\n", "a\r\n", "RSET\r\nQUIT\r\n"],
    ["dot inside a line", "a.b\r\n.\r\n", "a.b\r\n", ""],
    ["bare LF before the dot", "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n", ""],
    ["bare LF after the dot", "a\r\n.\nb\r\n.\r\n", "a\r\n.\nb\r\n", ""],
    ["bare CR before the dot", "a\r.\r\nb\r\n.\r\n", "a\r.\r\nb\r\n", ""],
    ["bare CR after the dot", "a\r\n.\rb\r\n.\r\n", "a\r\n.\rb\r\n", ""],
    ["dot after a bare LF is unstuffed", "a\n.x\r\n.\r\n", "a\nx\r\n", ""],
    ["bare LF at data start", "\n.\r\n.\r\n", "\n.\r\n", ""],
    ["no final dot yet", "a\r\n.x\r\nb", "a\r\nx\r\nb", undefined],
  ];

  for (const [name, input, message, rest] of cases) {
    test(`${name}, in any split`, () => {
      for (const chunks of splits(input)) {
        const shown = JSON.stringify(chunks);
        const result = decode(chunks);
        expect(result.message, shown).toBe(message);
        expect(result.rest, shown).toBe(rest);
      }
    });
  }

  test("a chunk without a line-start dot passes as one part", () => {
    const chunk = Buffer.from("Subject: x\r\n\r\nbody. more\r\n", "latin1");
    const { parts, rest } = new DataDecoder().push(chunk);
    expect(parts).toHaveLength(1);
    expect(parts[0]!.buffer).toBe(chunk.buffer);
    expect(rest).toBeUndefined();
  });

  test("matches the byte-by-byte rules in random chunks", () => {
    const unit = fc.constantFrom("\r", "\n", ".", "a");
    const body = fc.string({ unit, maxLength: 40 });
    const cuts = fc.array(fc.nat(), { maxLength: 6 });
    fc.assert(
      fc.property(body, cuts, (text, positions) => {
        const input = `${text}\r\n.\r\nTAIL`;
        const points = [...new Set(positions.map((position) => position % input.length))].sort((a, b) => a - b);
        const chunks: string[] = [];
        let start = 0;
        for (const point of points) {
          chunks.push(input.slice(start, point));
          start = point;
        }
        chunks.push(input.slice(start));
        expect(decode(chunks)).toEqual(reference(input));
      }),
      { numRuns: RUNS },
    );
  });
});
