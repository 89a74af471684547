import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { startChild, type Child } from "../plugins/maildir/test-support/children.js";
import { messageFor } from "../plugins/maildir/test-support/messages.js";
import { readWithPython } from "../plugins/maildir/test-support/read-maildir.js";

let root: string | undefined;
let children: Child[] = [];
afterEach(async () => {
  for (const child of children) if (child.process.exitCode === null) child.process.kill("SIGKILL");
  await Promise.all(children.map((child) => child.exited));
  children = [];
  if (root) await rm(root, { recursive: true, force: true });
  root = undefined;
});

const WRITERS = 4;
const EACH = 250;

test("concurrent writer processes keep every message", async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "maildir-writers-"));
  const maildir = path.join(root, "local.example", "bob", "Maildir");
  children = Array.from({ length: WRITERS }, (_, index) => startChild([maildir, String(EACH), `writer${index}`]));
  await Promise.all(children.map((child) => child.line("ready")));
  for (const child of children) child.process.stdin!.write("go\n");

  const reported: string[] = [];
  for (const child of children) {
    reported.push(...(JSON.parse(await child.line("[", 60_000)) as string[]));
    expect((await child.exited).code).toBe(0);
  }
  expect(new Set(reported).size).toBe(WRITERS * EACH);

  const names = await readdir(path.join(maildir, "new"));
  expect(names.sort()).toEqual([...reported].sort());
  expect(await readdir(path.join(maildir, "tmp"))).toEqual([]);

  // Every expected message is present exactly once and byte-identical.
  const expected = new Map<string, string>();
  for (let writer = 0; writer < WRITERS; writer++) {
    for (let index = 0; index < EACH; index++) {
      const text = messageFor(`writer${writer}`, index);
      expected.set(text, `writer${writer} ${index}`);
    }
  }
  const seen = new Set<string>();
  for (const name of names) {
    const text = await readFile(path.join(maildir, "new", name), "latin1");
    expect(expected.has(text), `${name} holds an unexpected or damaged message`).toBe(true);
    seen.add(text);
  }
  expect(seen.size).toBe(WRITERS * EACH);

  const python = await readWithPython(maildir);
  expect(python).toHaveLength(WRITERS * EACH);
  expect(new Set(python.map((message) => message.bytes.toString("latin1"))).size).toBe(WRITERS * EACH);
  expect(python.every((message) => expected.has(message.bytes.toString("latin1")))).toBe(true);
});
