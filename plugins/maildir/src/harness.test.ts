import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { testPlugin } from "@mailroom/testing";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import plugin from "./index.js";

let root: string;

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "mailroom-maildir-kit-"));
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const options = () => ({
  root,
  postmaster: "postmaster@local.example",
  domains: { "local.example": { mailboxes: ["bob", "postmaster"], aliases: { info: "bob" } } },
});

describe("maildir plugin through the test kit", () => {
  test.each([
    ["bob@local.example", "OK", 250],
    ["info@local.example", "OK", 250],
    ["bob+lists@LOCAL.example", "OK", 250],
    ["postmaster", "OK", 250],
    ["nosuch@local.example", "DENY", 550],
    ["someone@elsewhere.example", "CONT", 550],
  ])("rcpt %s", async (recipient, verdict, code) => {
    const harness = await testPlugin(plugin, options());
    const session = harness.session();
    await session.mail("a@sender.example");
    const call = await session.rcpt(recipient);
    expect(call.verdict).toBe(verdict);
    expect(call.code).toBe(code);
    await harness.close();
  });

  test("data stores the message in new/", async () => {
    const harness = await testPlugin(plugin, options());
    const session = harness.session();
    await session.mail("a@sender.example");
    await session.rcpt("info@local.example");
    const call = await session.data("Subject: kit\r\n\r\nhello\r\n");
    expect(call.code).toBe(250);

    const folder = path.join(root, "local.example/bob/Maildir/new");
    const [file] = await readdir(folder);
    const stored = await readFile(path.join(folder, file!), "utf8");
    expect(stored.startsWith("Return-Path: <a@sender.example>\r\nDelivered-To: bob@local.example\r\n")).toBe(true);
    expect(stored.endsWith("Subject: kit\r\n\r\nhello\r\n")).toBe(true);
    await harness.close();
  });
});
