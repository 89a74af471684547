import { describe, expect, test } from "vitest";
import { decodeEncodedWords } from "./headers.js";
import { parseHeaderBlock } from "./spool.js";

/** Parses a header block given as text, whose characters become octets in `encoding`. */
function headers(text: string, encoding: BufferEncoding = "latin1") {
  return parseHeaderBlock(Buffer.from(text, encoding));
}

describe("folded fields", () => {
  const folded = headers("Subject: hello\r\n world\r\n\tagain\r\nX-Other: 1\r\n\r\n");

  test("get() removes each CRLF and keeps the whitespace after it", () => {
    expect(folded.get("subject")).toEqual(["Subject: hello world\tagain"]);
  });

  test("getFirst() returns the unfolded value", () => {
    expect(folded.getFirst("Subject")).toBe("hello world\tagain");
  });

  test("list() and raw() keep the folding", () => {
    expect(folded.list()).toEqual([
      { key: "subject", line: "Subject: hello\r\n world\r\n\tagain" },
      { key: "x-other", line: "X-Other: 1" },
    ]);
    expect(folded.raw("subject")).toEqual([Buffer.from("Subject: hello\r\n world\r\n\tagain")]);
  });

  test("an encoded-word folded onto the next line decodes", () => {
    const subject = headers("Subject: =?UTF-8?B?SGVsbG8gV8O2cmxk?=\r\n =?UTF-8?Q?_again?=\r\n");
    expect(subject.getFirst("subject")).toBe("Hello Wörld again");
    expect(subject.get("subject")).toEqual(["Subject: =?UTF-8?B?SGVsbG8gV8O2cmxk?= =?UTF-8?Q?_again?="]);
  });
});

describe("encoded-words", () => {
  test.each([
    ["Q", "=?UTF-8?Q?Caf=C3=A9_au_lait?=", "Café au lait"],
    ["lower-case q", "=?utf-8?q?caf=c3=a9?=", "café"],
    ["B", "=?UTF-8?B?Q2Fmw6k=?=", "Café"],
    ["lower-case b without padding", "=?utf-8?b?Q2Fmw6k?=", "Café"],
    ["text around a word", "Re: =?UTF-8?Q?Caf=C3=A9?= [list]", "Re: Café [list]"],
    ["whitespace between words dropped", "=?UTF-8?Q?a?= \t =?UTF-8?Q?b?=", "ab"],
    ["whitespace around plain words kept", "a =?UTF-8?Q?b?= c", "a b c"],
    ["character split across two words", "=?UTF-8?B?8J+Y?= =?UTF-8?B?gA==?=", "😀"],
    ["language after the charset (RFC 2231)", "=?UTF-8*en?Q?hello?=", "hello"],
    ["an empty word", "x =?UTF-8?Q??= y", "x  y"],
  ])("%s", (_name, value, decoded) => {
    expect(headers(`Subject: ${value}\r\n`).getFirst("subject")).toBe(decoded);
  });

  test.each([
    ["ISO-8859-1", "=?ISO-8859-1?Q?Caf=E9?=", "Café"],
    ["windows-1252", "=?windows-1252?Q?=80_5?=", "€ 5"],
    ["KOI8-R", "=?KOI8-R?B?8NLJ18XU?=", "Привет"],
    ["ISO-2022-JP", "=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=", "テスト"],
    ["GB2312", "=?gb2312?B?xOO6ww==?=", "你好"],
    ["two charsets side by side", "=?ISO-8859-1?Q?=E9?= =?UTF-8?Q?=C3=A9?=", "éé"],
  ])("charset %s", (_name, value, decoded) => {
    expect(headers(`Subject: ${value}\r\n`).getFirst("subject")).toBe(decoded);
  });

  test("an unknown charset is read as UTF-8", () => {
    expect(headers("Subject: =?x-unknown?Q?caf=C3=A9?=\r\n").getFirst("subject")).toBe("café");
  });
});

describe("malformed encoded-words stay as sent", () => {
  test.each([
    ["invalid base64", "=?UTF-8?B?no*base64?="],
    ["base64 of a wrong length", "=?UTF-8?B?QUJDR?="],
    ["an incomplete Q escape", "=?UTF-8?Q?caf=E?="],
    ["a Q escape that is not hex", "=?UTF-8?Q?caf=ZZ?="],
    ["an unknown encoding", "=?UTF-8?X?abc?="],
    ["no end", "=?UTF-8?Q?abc"],
    ["a space inside", "=?UTF-8?Q?a b?="],
    ["an empty charset", "=??Q?abc?="],
    ["a charset with a dot", "=?utf.8?Q?abc?="],
  ])("%s", (_name, value) => {
    expect(headers(`Subject: ${value}\r\n`).getFirst("subject")).toBe(value);
  });

  test("next to well-formed words, which still decode", () => {
    const value = "=?UTF-8?Q?ok?= =?UTF-8?B?no*base64?= =?UTF-8?Q?fine?=";
    expect(headers(`Subject: ${value}\r\n`).getFirst("subject")).toBe("ok =?UTF-8?B?no*base64?= fine");
  });
});

describe("repeated fields", () => {
  const repeated = headers("Received: from a\r\nSubject: one\r\nreceived: from b\r\nRECEIVED: =?UTF-8?Q?from_c?=\r\n");

  test("get() returns every field in order", () => {
    expect(repeated.get("Received")).toEqual(["Received: from a", "received: from b", "RECEIVED: =?UTF-8?Q?from_c?="]);
  });

  test("getAll() decodes every value", () => {
    expect(repeated.getAll("received")).toEqual(["from a", "from b", "from c"]);
  });

  test("getFirst() returns the first", () => {
    expect(repeated.getFirst("received")).toBe("from a");
  });

  test("count() counts them", () => {
    expect(repeated.count("RECEIVED")).toBe(3);
    expect(repeated.count("subject")).toBe(1);
  });

  test.each(["received", "Received", " received\t", "RECEIVED "])("name %j matches every case", (name) => {
    expect(repeated.count(name)).toBe(3);
    expect(repeated.getAll(name)).toEqual(["from a", "from b", "from c"]);
    expect(repeated.getFirst(name)).toBe("from a");
    expect(repeated.raw(name)).toHaveLength(3);
  });

  test("a missing name gives empty results", () => {
    expect(repeated.get("x-missing")).toEqual([]);
    expect(repeated.getAll("x-missing")).toEqual([]);
    expect(repeated.getFirst("x-missing")).toBe("");
    expect(repeated.raw("x-missing")).toEqual([]);
    expect(repeated.count("x-missing")).toBe(0);
  });
});

describe("8-bit header text", () => {
  test("valid UTF-8 (RFC 6532) is read as UTF-8", () => {
    const utf8 = headers("Subject: Grüße aus München\r\n", "utf8");
    expect(utf8.get("subject")).toEqual(["Subject: Grüße aus München"]);
    expect(utf8.getFirst("subject")).toBe("Grüße aus München");
  });

  test("other 8-bit octets are read as latin1", () => {
    const latin1 = headers("Subject: caf\xe9\r\n");
    expect(latin1.getFirst("subject")).toBe("café");
  });

  test("raw() returns the octets as received", () => {
    const bytes = Buffer.from("Subject: Grüße\r\n\t=?UTF-8?Q?x?=", "utf8");
    const parsed = parseHeaderBlock(Buffer.concat([bytes, Buffer.from("\r\n\r\n")]));
    expect(parsed.raw("subject")).toEqual([bytes]);
  });
});

test("list() cannot be changed by a plugin", () => {
  const parsed = headers("Subject: a\r\n");
  expect(() => (parsed.list() as { key: string; line: string }[]).push({ key: "x", line: "X: y" })).toThrow(TypeError);
  expect(() => {
    (parsed.list()[0] as { line: string }).line = "Subject: b";
  }).toThrow(TypeError);
  expect(parsed.getFirst("subject")).toBe("a");
});

describe("decoding takes linear time", () => {
  /** Returns the fastest of a few runs in nanoseconds, so a busy machine disturbs the ratio less. */
  function time(run: () => void): number {
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const start = process.hrtime.bigint();
      run();
      best = Math.min(best, Number(process.hrtime.bigint() - start));
    }
    return best;
  }

  test.each([
    ["well-formed words", "=?UTF-8?Q?ab?= "],
    ["malformed words", "=?UTF-8?B?*?= "],
    ["word starts without an end", "=?UTF-8?Q?"],
    ["bare =?", "=?"],
    ["words split by long whitespace", `=?UTF-8?B?QQ==?=${" ".repeat(50)}`],
  ])("on %s", (_name, unit) => {
    const value = (count: number) => unit.repeat(count);
    const small = value(2_000);
    const large = value(32_000);
    decodeEncodedWords(small);
    const ratio = time(() => decodeEncodedWords(large)) / Math.max(1, time(() => decodeEncodedWords(small)));
    // Sixteen times the input: linear is about 16, quadratic about 256.
    // The bound sits far from both, because a loaded machine skews timings.
    expect(ratio).toBeLessThan(80);
  });
});
