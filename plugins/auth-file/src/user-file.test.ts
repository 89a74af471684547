import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { hashPassword, verifyPassword } from "./password.js";
import { parseUserFile, readUserFile, setPassword, UserFileError } from "./user-file.js";

const CHEAP = { N: 1024, r: 8, p: 1 };

let dir: string;
let file: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-user-file-"));
  file = path.join(dir, "users");
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("parseUserFile", () => {
  test("skips comments and blank lines", async () => {
    const hash = await hashPassword("secret", CHEAP);
    const users = parseUserFile(`# users\n\nalice:${hash}\r\n  bob@example.test:${hash}  \n`, "users");
    expect([...users.keys()]).toEqual(["alice", "bob@example.test"]);
  });

  const invalid: [string, string, RegExp][] = [
    ["line without colon", "alice\n", /users:1: expected user:scrypt/],
    ["empty user name", ":scrypt$1024$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA\n", /users:1: user name is empty/],
    ["invalid hash", "# first\nalice:plain-text-password\n", /users:2: invalid password hash for alice/],
    ["space in name", "al ice:x\n", /users:1: .*whitespace/],
  ];
  test.each(invalid)("rejects %s", (_name, text, message) => {
    expect(() => parseUserFile(text, "users")).toThrow(message);
  });

  test("rejects a user listed twice", async () => {
    const hash = await hashPassword("secret", CHEAP);
    expect(() => parseUserFile(`alice:${hash}\nalice:${hash}\n`, "users")).toThrow(/users:2: user alice is listed twice/);
  });
});

describe("readUserFile", () => {
  test("missing file names the command to create it", async () => {
    const error = await readUserFile(file).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(UserFileError);
    expect((error as Error).message).toContain(`cannot read user file ${file}: file not found`);
    expect((error as Error).message).toContain("mailroom passwd");
  });
});

describe("setPassword", () => {
  test("creates the file with mode 600", async () => {
    expect(await setPassword(file, "alice", "secret", { cost: CHEAP })).toEqual({ created: true });
    const users = await readUserFile(file);
    expect(await verifyPassword("secret", users.get("alice")!)).toBe(true);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  test("changes a password and keeps the other lines", async () => {
    const bobHash = await hashPassword("bob's", CHEAP);
    await writeFile(file, `# mail users\nalice:${await hashPassword("old", CHEAP)}\nbob:${bobHash}\n`, { mode: 0o640 });

    expect(await setPassword(file, "alice", "new", { cost: CHEAP })).toEqual({ created: false });

    const text = await readFile(file, "utf8");
    const lines = text.split("\n");
    expect(lines[0]).toBe("# mail users");
    expect(lines[1]).toMatch(/^alice:scrypt\$/);
    expect(lines[2]).toBe(`bob:${bobHash}`);
    expect(lines).toHaveLength(4);
    const users = await readUserFile(file);
    expect(await verifyPassword("new", users.get("alice")!)).toBe(true);
    expect(await verifyPassword("old", users.get("alice")!)).toBe(false);
    expect((await stat(file)).mode & 0o777).toBe(0o640);
  });

  test("concurrent calls keep every change", async () => {
    const names = ["u1", "u2", "u3", "u4", "u5", "u6"];
    await Promise.all(names.map((name) => setPassword(file, name, `pw-${name}`, { cost: CHEAP })));
    const users = await readUserFile(file);
    expect([...users.keys()].sort()).toEqual(names);
  });

  test("leaves no temporary or lock file", async () => {
    await setPassword(file, "alice", "secret", { cost: CHEAP });
    expect(await readdir(dir)).toEqual(["users"]);
  });

  test("waits for another process's lock, then fails", async () => {
    await writeFile(`${file}.lock`, "12345\n");
    await expect(setPassword(file, "alice", "secret", { cost: CHEAP, lockTimeout: 100 })).rejects.toThrow(
      /is locked by another process.*remove .*users\.lock/,
    );
    await expect(stat(file)).rejects.toThrow();
  });

  test.each([
    ["", /user name is empty/],
    ["a:b", /colon/],
    ["a b", /whitespace/],
    ["a\nb", /whitespace|control/],
    ["#alice", /must not start with "#"/],
  ])("rejects user name %j", async (user, message) => {
    await expect(setPassword(file, user, "secret", { cost: CHEAP })).rejects.toThrow(message);
  });

  test("missing folder is named", async () => {
    const missing = path.join(dir, "nosuch", "users");
    await expect(setPassword(missing, "alice", "secret", { cost: CHEAP })).rejects.toThrow(
      `cannot write user file ${missing}: folder ${path.join(dir, "nosuch")} does not exist`,
    );
  });

  test("rejects an empty password", async () => {
    await expect(setPassword(file, "alice", "", { cost: CHEAP })).rejects.toThrow(/password is empty/);
  });
});
