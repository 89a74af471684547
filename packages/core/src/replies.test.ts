import { describe, expect, test } from "vitest";
import { deny, denyDisconnect, denySoft, denySoftDisconnect, ok } from "./answers.js";
import type { SessionHookName } from "./hooks.js";
import { asciiReplyText, formatReply, oneLineReplyText, replacedCodes, replyFor, replyForOutcome } from "./replies.js";

type Row = [SessionHookName, ReturnType<typeof ok> | undefined | "ERROR", string | null, boolean?];

// hook, answer, expected "code enhanced", closes the connection
const TABLE: Row[] = [
  ["connect", undefined, null],
  ["connect", ok(), null],
  ["connect", deny(), "554 5.7.1", true],
  ["connect", denySoft(), "421 4.7.0", true],
  ["connect", "ERROR", "421 4.3.0", true],
  ["helo", deny(), "550"],
  ["ehlo", denySoft(), "450"],
  ["helo", "ERROR", "451"],
  ["auth", undefined, "535 5.7.8"],
  ["auth", ok(), "235 2.7.0"],
  ["auth", "ERROR", "454 4.7.0"],
  ["vrfy", undefined, "252 2.1.5"],
  ["vrfy", ok(), "250 2.1.5"],
  ["vrfy", deny(), "550 5.1.1"],
  ["expn", undefined, "502 5.5.1"],
  ["mail", undefined, "250 2.1.0"],
  ["mail", deny(), "550 5.7.1"],
  ["mail", denySoft(), "450 4.7.1"],
  ["mail", "ERROR", "451 4.3.0"],
  ["rcpt", undefined, "550 5.7.1"],
  ["rcpt", ok(), "250 2.1.5"],
  ["rcpt", deny(), "550 5.7.1"],
  ["rcpt", denySoft(), "450 4.7.1"],
  ["rcpt", denyDisconnect(), "550 5.7.1", true],
  ["rcpt", denySoftDisconnect(), "450 4.7.1", true],
  ["rcpt", "ERROR", "451 4.3.0"],
  ["data", undefined, null],
  ["data", deny(), "554 5.7.1"],
  ["data", denySoft(), "451 4.7.1"],
  ["data_post", deny(), "554 5.7.1"],
  ["data_post", "ERROR", "451 4.3.0"],
  ["queue", undefined, "451 4.3.0"],
  ["queue", ok(), "250 2.0.0"],
  ["queue", denySoft(), "451 4.3.0"],
  ["queue", "ERROR", "451 4.3.0"],
  ["unknown_command", undefined, "500 5.5.1"],
  ["reset", "ERROR", null],
  ["disconnect", "ERROR", null],
];

describe("replyFor", () => {
  test.each(TABLE)("%s with %o", (hook, answer, expected, closes = false) => {
    const reply = replyFor(hook, answer);
    if (expected === null) {
      expect(reply).toBeNull();
      return;
    }
    const text = reply!.enhanced ? `${reply!.code} ${reply!.enhanced}` : `${reply!.code}`;
    expect(text).toBe(expected);
    expect(reply!.close ?? false).toBe(closes);
  });

  test("answer code and text replace the defaults", () => {
    const reply = replyFor("rcpt", deny({ code: 550, enhanced: "5.1.1", message: "No such user" }));
    expect(reply).toEqual({ code: 550, enhanced: "5.1.1", message: "No such user" });
  });

  test("421 from a plugin closes the connection", () => {
    const reply = replyFor("rcpt", denySoft({ code: 421 }));
    expect(reply?.enhanced).toBe("4.7.1");
    expect(reply?.close).toBe(true);
  });

  test("generic enhanced code when the default's class differs", () => {
    expect(replyFor("queue", ok({ code: 251 }))?.enhanced).toBe("2.0.0");
    expect(replyFor("unknown_command", denySoft({ code: 452 }))?.enhanced).toBe("4.5.0");
  });

  test.each([
    ["deny with a 2xx code", deny({ code: 250 }), "550 5.7.1"],
    ["ok with a 5xx code", ok({ code: 550 }), "250 2.1.5"],
    ["denySoft with a 5xx code", denySoft({ code: 550 }), "450 4.7.1"],
    ["code out of range", deny({ code: 999 }), "550 5.7.1"],
    ["malformed enhanced code", deny({ code: 550, enhanced: "banana" }), "550 5.7.1"],
    ["enhanced code of another class", deny({ code: 553, enhanced: "4.1.1" }), "553 5.7.1"],
  ])("%s is ignored", (_name, answer, expected) => {
    const reply = replyFor("rcpt", answer);
    expect(`${reply?.code} ${reply?.enhanced}`).toBe(expected);
  });

  test("helo replies carry no enhanced code", () => {
    expect(replyFor("ehlo", deny({ enhanced: "5.7.1" }))?.enhanced).toBeUndefined();
  });
});

describe("replyForOutcome", () => {
  test("error gets the hook's ERROR reply", () => {
    expect(replyForOutcome("rcpt", { kind: "error", plugin: "p", error: new Error("x") })).toEqual(replyFor("rcpt", "ERROR"));
    expect(replyForOutcome("connect", { kind: "error", plugin: "p", error: new Error("x") })).toMatchObject({ code: 421, close: true });
  });

  test("answer gets the reply for that answer", () => {
    const answer = deny({ code: 553, message: "No" });
    expect(replyForOutcome("mail", { kind: "answer", answer, plugin: "p" })).toEqual(replyFor("mail", answer));
    expect(replyForOutcome("mail", { kind: "answer", answer, plugin: "p" })).toMatchObject({ code: 553, message: "No" });
  });

  test("cont gets the hook's default", () => {
    expect(replyForOutcome("rcpt", { kind: "cont" })).toMatchObject({ code: 550, enhanced: "5.7.1" });
    expect(replyForOutcome("data_post", { kind: "cont" })).toBeNull();
  });
});

describe("formatReply", () => {
  test("multi-line reply repeats code and enhanced code", () => {
    const text = formatReply({ code: 250, enhanced: "2.0.0", message: ["one", "two"] });
    expect(text).toBe("250-2.0.0 one\r\n250 2.0.0 two");
  });

  test("long reply line is cut at 510 octets", () => {
    const text = formatReply({ code: 550, enhanced: "5.7.1", message: "x".repeat(5000) });
    expect(Buffer.byteLength(text)).toBe(510);
  });

  test("control characters are replaced", () => {
    expect(formatReply({ code: 550, message: "a\u0000b" })).toBe("550 a b");
  });

  test("characters outside US-ASCII become ?", () => {
    expect(formatReply({ code: 550, enhanced: "5.7.1", message: "nö wäy" })).toBe("550 5.7.1 n? w?y");
  });

  test("a character outside the BMP becomes one ?", () => {
    expect(formatReply({ code: 250, message: ["ok \u{1F600}", "caf\u00e9"] })).toBe("250-ok ?\r\n250 caf?");
  });
});

describe("asciiReplyText", () => {
  test("keeps printable ASCII, tab and line ends", () => {
    expect(asciiReplyText("a\tb\r\nc ~")).toBe("a\tb\r\nc ~");
  });

  test("replaces each code point outside US-ASCII", () => {
    expect(asciiReplyText("\u00fc\u{1F600}\u4e2d")).toBe("???");
  });
});

describe("replacedCodes", () => {
  test("code outside the verdict's class", () => {
    expect(replacedCodes("rcpt", deny({ code: 450 }))).toEqual({
      reason: "reply code 450 does not fit verdict DENY, which takes 5xx",
      usedCode: 550,
      usedEnhanced: "5.7.1",
    });
  });

  test("code that is no reply code", () => {
    const replaced = replacedCodes("mail", denySoft({ code: 99 }));
    expect(replaced?.reason).toBe("reply code 99 is invalid (expected an integer from 200 to 599)");
    expect(replaced?.usedCode).toBe(450);
  });

  test("enhanced code with invalid syntax", () => {
    const replaced = replacedCodes("rcpt", deny({ code: 550, enhanced: "5.1" }));
    expect(replaced?.reason).toBe('enhanced status code "5.1" is invalid (expected class.subject.detail, for example 5.7.1)');
    expect(replaced?.usedCode).toBe(550);
    expect(replaced?.usedEnhanced).toBe("5.7.1");
  });

  test("enhanced code of another class", () => {
    const replaced = replacedCodes("rcpt", denySoft({ enhanced: "5.7.1" }));
    expect(replaced?.reason).toBe("enhanced status code 5.7.1 does not match reply code 450");
    expect(replaced?.usedEnhanced).toBe("4.7.1");
  });

  test("both codes replaced", () => {
    const replaced = replacedCodes("data", deny({ code: 451, enhanced: "4.7.1" }));
    expect(replaced?.reason).toBe(
      "reply code 451 does not fit verdict DENY, which takes 5xx, and enhanced status code 4.7.1 does not match reply code 554",
    );
  });

  test("fitting codes and no codes", () => {
    expect(replacedCodes("rcpt", deny({ code: 553, enhanced: "5.1.3" }))).toBeUndefined();
    expect(replacedCodes("rcpt", deny({ code: 553 }))).toBeUndefined();
    expect(replacedCodes("rcpt", deny({ message: "no" }))).toBeUndefined();
  });

  test("hooks that send no reply for the answer", () => {
    expect(replacedCodes("data", ok({ code: 550 }))).toBeUndefined();
    expect(replacedCodes("deliver", deny({ code: 250 }))).toBeUndefined();
  });

  test("enhanced code at HELO is not reported", () => {
    expect(replacedCodes("helo", deny({ code: 550, enhanced: "5.7.1" }))).toBeUndefined();
    expect(replacedCodes("helo", deny({ code: 450 }))?.usedCode).toBe(550);
  });
});

describe("oneLineReplyText", () => {
  test("joins lines with a space", () => {
    expect(oneLineReplyText(535, "5.7.8", "one\ntwo\r\nthree")).toBe("one two three");
  });

  test("cuts the text to fit the line", () => {
    expect(oneLineReplyText(535, "5.7.8", "x".repeat(600))).toBe("x".repeat(500));
    expect(oneLineReplyText(535, undefined, "x".repeat(600))).toBe("x".repeat(506));
  });

  test("replaces characters outside US-ASCII", () => {
    expect(oneLineReplyText(454, "4.7.0", "später")).toBe("sp?ter");
  });
});
