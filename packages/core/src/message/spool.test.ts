import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { MAX_HEADER_BLOCK, MemoryBudget, parseHeaderBlock, SpoolWriter, type SpoolOptions } from "./spool.js";

let dir: string;
let counter = 0;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-spool-unit-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Writes the chunks to a new spool and returns what it found and stored. */
async function spool(chunks: (string | Buffer)[], options: Partial<SpoolOptions> = {}) {
  const writer = new SpoolWriter({
    dir,
    name: `m${++counter}.eml`,
    maxSize: 1_000_000,
    maxLineLength: 1000,
    lineEndings: "strict",
    ...options,
  });
  for (const chunk of chunks) await writer.write(typeof chunk === "string" ? Buffer.from(chunk, "latin1") : chunk);
  const result = await writer.finish();
  const body = result.body;
  const stored = body.bytes ? body.bytes.toString("latin1") : await readFile(body.path, "latin1");
  await writer.remove();
  return { ...result, stored };
}

describe("line endings", () => {
  test("a CRLF message is stored byte for byte, however it is chunked", async () => {
    const text = "Subject: a\r\n\r\nline one\r\nline two\r\n";
    for (let cut = 1; cut < text.length; cut += 3) {
      const result = await spool([text.slice(0, cut), text.slice(cut)]);
      expect(result.stored).toBe(text);
      expect(result.bareLineEnding).toBe(false);
    }
  });

  test.each(["a\nb\r\n", "a\rb\r\n", "a\r\n\n", "a\r\r\n", "ab\r"])("strict mode flags %j and stores nothing more", async (text) => {
    const result = await spool(["Subject: x\r\n\r\n", text]);
    expect(result.bareLineEnding).toBe(true);
  });

  test("normalize mode rewrites bare CR and LF to CRLF", async () => {
    const result = await spool(["Subject: x\n\nA\rB\nC\r", "\nD\r"], { lineEndings: "normalize" });
    expect(result.stored).toBe("Subject: x\r\n\r\nA\r\nB\r\nC\r\nD\r\n");
    expect(result.bareLineEnding).toBe(true);
    expect(result.headers?.getFirst("subject")).toBe("x");
  });
});

describe("memory and spool file", () => {
  const text = `Subject: m\r\n\r\n${"0123456789abcdef\r\n".repeat(20)}`;
  const pieces = [text.slice(0, 50), text.slice(50, 200), text.slice(200)];

  test("message within budget stays in memory", async () => {
    const memory = new MemoryBudget(10_000, 1000);
    const writer = new SpoolWriter({ dir, name: `m${++counter}.eml`, maxSize: 1_000_000, maxLineLength: 1000, lineEndings: "strict", memory });
    for (const piece of pieces) expect(writer.write(Buffer.from(piece, "latin1"))).toBeUndefined();
    const result = await writer.finish();
    expect(writer.inFile).toBe(false);
    expect(result.body.bytes?.toString("latin1")).toBe(text);
    expect(memory.inUse).toBe(text.length);
    await writer.remove();
    expect(memory.inUse).toBe(0);
    await expect(readFile(writer.path)).rejects.toMatchObject({ code: "ENOENT" });
  });

  test.each([
    ["its own limit", new MemoryBudget(10_000, 100)],
    ["the shared budget", new MemoryBudget(120, 1000)],
  ])("a message over %s moves to the spool file with every byte", async (_name, memory) => {
    const result = await spool(pieces, { memory });
    expect(result.body.path).toBeDefined();
    expect(result.stored).toBe(text);
    expect(memory.inUse).toBe(0);
  });

  test("without a budget every message goes to the spool file", async () => {
    const result = await spool(pieces);
    expect(result.body.path).toBeDefined();
    expect(result.stored).toBe(text);
  });

  test("a refused message frees its memory at once", async () => {
    const memory = new MemoryBudget(10_000, 1000);
    const writer = new SpoolWriter({ dir, name: `m${++counter}.eml`, maxSize: 60, maxLineLength: 1000, lineEndings: "strict", memory });
    await writer.write(Buffer.from(pieces[0]!, "latin1"));
    expect(memory.inUse).toBe(50);
    await writer.write(Buffer.from(pieces[1]!, "latin1"));
    expect(memory.inUse).toBe(0);
    expect((await writer.finish()).tooBig).toBe(true);
    await writer.remove();
  });
});

describe("limits", () => {
  test("size counts every octet and stops storing past the limit", async () => {
    const result = await spool(["a".repeat(60) + "\r\n", "b".repeat(60) + "\r\n"], { maxSize: 100 });
    expect(result.tooBig).toBe(true);
    expect(result.received).toBe(124);
    expect(result.size).toBe(62);
  });

  test("a line over the limit is flagged, CR and LF not counted", async () => {
    expect((await spool([`${"x".repeat(1000)}\r\n`])).lineTooLong).toBe(false);
    expect((await spool([`${"x".repeat(600)}`, `${"x".repeat(401)}\r\n`])).lineTooLong).toBe(true);
  });
});

describe("headers", () => {
  test("folded fields are kept whole and the body is not parsed", async () => {
    const result = await spool([
      "Received: from a\r\n\tby b\r\nSubject: hello\r\n world\r\nReceived: from c\r\n\r\nNot-A: header\r\n",
    ]);
    expect(result.headers?.list().map((field) => field.line)).toEqual([
      "Received: from a\r\n\tby b",
      "Subject: hello\r\n world",
      "Received: from c",
    ]);
    expect(result.headers?.getFirst("subject")).toBe("hello world");
    expect(result.headers?.get("not-a")).toEqual([]);
  });

  test("a message without a blank line is all header", async () => {
    const result = await spool(["Subject: only\r\nX-A: 1\r\n"]);
    expect(result.headers?.list().map((line) => line.key)).toEqual(["subject", "x-a"]);
  });

  test("the blank line may arrive split across chunks", async () => {
    const result = await spool(["Subject: s\r", "\n\r", "\nX-Body: no\r\n"]);
    expect(result.headers?.list().map((line) => line.key)).toEqual(["subject"]);
  });

  test("a header block over the limit keeps the complete lines before it", async () => {
    const line = `X-Filler: ${"f".repeat(1000)}\r\n`;
    const count = Math.ceil(MAX_HEADER_BLOCK / line.length) + 5;
    const result = await spool([line.repeat(count), "\r\nbody\r\n"], { maxSize: 10 * MAX_HEADER_BLOCK, maxLineLength: 2000 });
    const kept = result.headers!.get("x-filler").length;
    expect(kept).toBe(Math.floor(MAX_HEADER_BLOCK / line.length));
  });

  test("a refused message is not parsed at all", async () => {
    const result = await spool(["Subject: x\n\n"]);
    expect(result.headers).toBeUndefined();
  });
});

describe("header parsing takes linear time", () => {
  /** The fastest of a few runs, so a busy machine disturbs the ratio less. */
  function time(run: () => void): number {
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const start = process.hrtime.bigint();
      run();
      best = Math.min(best, Number(process.hrtime.bigint() - start));
    }
    return best;
  }

  test("on many folded lines and long runs of CR", () => {
    for (const unit of ["\r\n x", "\r", "\r\nX-A: b"]) {
      const block = (count: number) => Buffer.from(`Subject: s${unit.repeat(count)}\r\n`, "latin1");
      const small = block(10_000);
      const large = block(160_000);
      parseHeaderBlock(small).list();
      const ratio = time(() => parseHeaderBlock(large).list()) / Math.max(1, time(() => parseHeaderBlock(small).list()));
      // Sixteen times the input: linear is about 16, quadratic about 256.
      // The bound sits far from both, because a loaded machine skews timings.
      expect(ratio, JSON.stringify(unit)).toBeLessThan(80);
    }
  });
});
