import { describe, expect, test } from "vitest";
import { parseVrfyArgument } from "./argument.js";

describe("parseVrfyArgument", () => {
  test.each([
    ["bob", { local: "bob", domain: undefined }],
    ["  bob  ", { local: "bob", domain: undefined }],
    ["bob@local.example", { local: "bob", domain: "local.example" }],
    ["bob@Local.Example", { local: "bob", domain: "local.example" }],
    ["bob@local.example.", { local: "bob", domain: "local.example" }],
    ["<bob@local.example>", { local: "bob", domain: "local.example" }],
    ["< bob@local.example >", { local: "bob", domain: "local.example" }],
    ["<bob>", { local: "bob", domain: undefined }],
    ["Bob Smith <bob@local.example>", { local: "bob", domain: "local.example" }],
    ['"Smith, <Bob>" <bob@local.example>', { local: "bob", domain: "local.example" }],
    ['"bob smith"@local.example', { local: "bob smith", domain: "local.example" }],
    ['"a@b"', { local: "a@b", domain: undefined }],
    ['<"a>b"@local.example>', { local: "a>b", domain: "local.example" }],
    ["first.last@local.example", { local: "first.last", domain: "local.example" }],
    ["bob@[192.0.2.1]", { local: "bob", domain: "[192.0.2.1]" }],
  ])("reads %j", (argument, expected) => {
    expect(parseVrfyArgument(argument)).toEqual(expected);
  });

  test.each([
    "",
    "<>",
    "Bob Smith",
    "bob smith@local.example",
    "<bob@local.example",
    "bob@",
    "@local.example",
    "bob@local..example",
    "bob..smith",
    "Bob <bob@local.example> extra",
    "<<bob@local.example>>",
  ])("rejects %j", (argument) => {
    expect(parseVrfyArgument(argument)).toBeNull();
  });
});
