import { expect, test } from "vitest";
import { describeError, errorJsonReplacer } from "./logging.js";

test.each([
  [Object.assign(new Error("user file is invalid"), { code: "MAILROOM_USER_FILE_INVALID" }), "user file is invalid (MAILROOM_USER_FILE_INVALID)"],
  [Object.assign(new Error("ENOENT: no such file or directory, open 'x'"), { code: "ENOENT" }), "ENOENT: no such file or directory, open 'x'"],
  [new Error("plain"), "plain"],
  [Object.assign(new Error("numeric code"), { code: 42 }), "numeric code"],
  ["a string", "a string"],
])("describeError %#", (error, text) => {
  expect(describeError(error)).toBe(text);
});

test("errorJsonReplacer writes type, message and code", () => {
  const error = Object.assign(new SyntaxError("Unexpected token"), { code: "E_PARSE" });
  const text = JSON.stringify({ id: "garbled", err: error, nested: { cause: new Error("inner") } }, errorJsonReplacer);
  expect(JSON.parse(text)).toEqual({
    id: "garbled",
    err: { type: "SyntaxError", message: "Unexpected token", code: "E_PARSE" },
    nested: { cause: { type: "Error", message: "inner" } },
  });
});
