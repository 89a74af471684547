import { spawn, spawnSync } from "node:child_process";
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parsePasswordHash, verifyPassword } from "@mailroom/plugin-auth-file";
import { startTestServer } from "@mailroom/testing";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { QueueStore } from "../plugins/mx/src/store.js";

const BIN = fileURLToPath(new URL("../packages/cli/bin/mailroom.js", import.meta.url));

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-admin-"));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function mailroom(args: string[], input?: string) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 20_000, input });
}

// Runs a command on a pseudo-terminal, types the keys once the password
// prompt shows, and prints everything the terminal showed.
const TERMINAL = `
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
shown = b""
deadline = time.time() + 15
while b"New password: " not in shown and time.time() < deadline:
    shown += os.read(fd, 1024)
os.write(fd, sys.argv[1].encode())
while True:
    try:
        data = os.read(fd, 1024)
    except OSError:
        break
    if not data:
        break
    shown += data
sys.stdout.write(shown.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
`;

/** Runs the CLI on a pseudo-terminal, as an administrator would at a shell, typing `keys`. */
function onTerminal(args: string[], keys: string) {
  return spawnSync("python3", ["-c", TERMINAL, keys, process.execPath, BIN, ...args], { encoding: "utf8", timeout: 30_000 });
}

describe("mailroom queue", () => {
  test("list, show, retry and delete a queued record", async () => {
    const config = `server:
  hostname: mx.admin.test
  listen: ["127.0.0.1:0"]
plugins:
  - use: "@mailroom/plugin-relay"
    with: { trustedNetworks: ["127.0.0.0/8"] }
  - use: "@mailroom/plugin-mx"
    with: { queueDir: ./queue, deliver: false }
`;
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, config);
    const server = await startTestServer(config, { dir });
    const client = await server.connect();
    const replies = await client.send({ from: "alice@local.test", to: ["bob@remote.test"], message: "Subject: queued\r\n\r\nx\r\n" });
    expect(replies.at(-1)?.code).toBe(250);
    client.close();
    await server.stop();

    const list = mailroom(["queue", "list", "--config", file]);
    expect(list.status).toBe(0);
    expect(list.stdout).toMatch(/alice@local\.test/);
    expect(list.stdout).toMatch(/remote\.test/);
    const id = list.stdout.split("\n")[1]!.trim().split(/\s+/)[0]!;

    const show = mailroom(["queue", "show", id, "--config", file]);
    expect(show.status).toBe(0);
    expect(show.stdout).toContain("bob@remote.test");

    const retry = mailroom(["queue", "retry", id, "--config", file]);
    expect(retry.status).toBe(0);
    expect(retry.stdout).toBe("1 record due now\n");

    const missing = mailroom(["queue", "retry", "--config", file]);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toBe("mailroom: queue retry: give a record ID or --all\n");
    const both = mailroom(["queue", "retry", id, "--all", "--config", file]);
    expect(both.status).toBe(2);
    expect(both.stderr).toBe("mailroom: queue retry: give a record ID or --all, not both\n");

    const removed = mailroom(["queue", "delete", id, "--config", file]);
    expect(removed.status).toBe(0);
    expect(mailroom(["queue", "list", "--config", file]).stdout).not.toContain("alice@local.test");
    const gone = mailroom(["queue", "show", id, "--config", file]);
    expect(gone.status).toBe(1);
    expect(gone.stderr).toBe(`mailroom: queue show failed: no queued message ${id}\n`);
  });

  test("unreadable record warning names the error", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, 'server:\n  listen: ["127.0.0.1:0"]\nplugins:\n  - use: "@mailroom/plugin-mx"\n    with: { queueDir: ./queue, deliver: false }\n');
    await mkdir(path.join(dir, "queue/active"), { recursive: true });
    await writeFile(path.join(dir, "queue/active/garbled.msg"), "garbage\nSubject: x\r\n\r\nx\r\n");

    const list = mailroom(["queue", "list", "--config", file]);
    expect(list.status).toBe(0);
    const warning = list.stderr.split("\n").find((line) => line.includes("garbled"));
    expect(warning, list.stderr).toBeDefined();
    const fields = JSON.parse(warning!.slice(warning!.indexOf("{")));
    expect(fields.err.type).toBe("SyntaxError");
    expect(fields.err.message).toMatch(/not valid JSON/);
  });

  test("record with an invalid time is skipped", async () => {
    const file = path.join(dir, "mailroom.yaml");
    await writeFile(file, 'server:\n  listen: ["127.0.0.1:0"]\nplugins:\n  - use: "@mailroom/plugin-mx"\n    with: { queueDir: ./queue, deliver: false }\n');
    const store = new QueueStore(path.join(dir, "queue"), pino({ level: "silent" }));
    await store.init();
    const ids: string[] = [];
    for (const to of ["far@remote.test", "near@remote.test"]) {
      const { records } = await store.add([Buffer.from("Subject: x\r\n\r\nx\r\n")], {
        sender: "alice@local.test",
        domains: new Map([["remote.test", [to]]]),
        now: Date.now(),
      });
      ids.push(records[0]!.id);
    }
    const [far, near] = ids as [string, string];
    // A time that JSON and the old shape check accept, but no Date can hold.
    const farFile = store.activePath(far);
    const text = await readFile(farFile, "utf8");
    const end = text.indexOf("\n");
    const state = JSON.parse(text.slice(0, end)) as Record<string, unknown>;
    await writeFile(farFile, `${JSON.stringify({ ...state, nextAttemptAt: 1e300 })}${text.slice(end)}`);

    const list = mailroom(["queue", "list", "--config", file]);
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout).toContain(near);
    expect(list.stdout).not.toContain(far);
    const warning = list.stderr.split("\n").find((line) => line.includes(far));
    expect(warning, list.stderr).toContain("unreadable queue record left in place");
    expect(warning).toContain("nextAttemptAt is 1e+300, not a time in milliseconds that a Date can hold");

    const show = mailroom(["queue", "show", far, "--config", file]);
    expect(show.status).toBe(1);
    expect(show.stderr).toContain(`mailroom: queue show failed: queue record ${far} is unreadable (not a queue record: nextAttemptAt is 1e+300`);
    expect(show.stderr).toContain("). The server sets it aside in corrupt/");
    expect(mailroom(["queue", "show", near, "--config", file]).status).toBe(0);
  });
});

describe("mailroom passwd", () => {
  test("adds a user and changes the password", async () => {
    const users = path.join(dir, "users");
    const added = mailroom(["passwd", users, "alice"], "first secret\n");
    expect(added.status).toBe(0);
    expect(added.stdout).toMatch(/^added alice/);

    const changed = mailroom(["passwd", users, "alice"], "second secret\n");
    expect(changed.status).toBe(0);
    expect(changed.stdout).toMatch(/^changed the password of alice/);

    const line = (await readFile(users, "utf8")).split("\n").find((text) => text.startsWith("alice:"))!;
    const hash = parsePasswordHash(line.slice("alice:".length));
    expect(await verifyPassword("second secret", hash as never)).toBe(true);
    expect(await verifyPassword("first secret", hash as never)).toBe(false);
  });

  test("empty password changes nothing", () => {
    const result = mailroom(["passwd", path.join(dir, "users"), "alice"], "\n");
    expect(result.status).toBe(1);
    expect(result.stderr).toBe("mailroom: passwd: the password is empty; nothing was changed\n");
  });

  test("invalid user name is a usage error", async () => {
    const users = path.join(dir, "users");
    for (const user of ["bad:name", "two words", "", "#comment"]) {
      const result = mailroom(["passwd", users, user], "secret\n");
      expect(result.status, user).toBe(2);
      expect(result.stderr, user).toContain(`mailroom: passwd: invalid user name ${JSON.stringify(user)}: `);
    }
    await expect(access(users)).rejects.toThrow(/ENOENT/);
  });

  test("missing folder is named before the prompt", async () => {
    const folder = path.join(dir, "nosuch");
    const piped = mailroom(["passwd", path.join(folder, "users"), "alice"], "secret\n");
    expect(piped.status).toBe(1);
    expect(piped.stderr).toBe(
      `mailroom: passwd: folder ${folder} does not exist; create it, or give a user file in an existing folder (nothing was changed)\n`,
    );

    // With stdin left open, the command ends without waiting for a password.
    const waiting = spawn(process.execPath, [BIN, "passwd", path.join(folder, "users"), "alice"], { stdio: ["pipe", "pipe", "pipe"] });
    const code = await new Promise<number | null>((resolve) => waiting.once("exit", resolve));
    waiting.stdin!.destroy();
    expect(code).toBe(1);
  });

  test("input with more lines changes nothing", async () => {
    const users = path.join(dir, "users");
    expect(mailroom(["passwd", users, "alice"], "first secret\n").status).toBe(0);
    const before = await readFile(users, "utf8");

    const cases: Array<[input: string, message: string]> = [
      ["second secret\nleftover\n", "stdin has 1 more non-empty line after the password"],
      ["second secret\r\nleftover\r\nmore", "stdin has 2 more non-empty lines after the password"],
      ["second secret\n \n", "stdin has 1 more non-empty line after the password"],
      ["\nsecond secret\n", "the first line of stdin is empty"],
      ["x".repeat(70_000), "stdin is longer than 65536 characters"],
    ];
    for (const [input, message] of cases) {
      const result = mailroom(["passwd", users, "alice"], input);
      expect(result.status, JSON.stringify(input.slice(0, 40))).toBe(1);
      expect(result.stderr).toContain(`mailroom: passwd: ${message}`);
      expect(result.stderr).toContain("(nothing was changed)");
    }
    expect(await readFile(users, "utf8")).toBe(before);
  });

  test("line break and empty lines after the password", async () => {
    const users = path.join(dir, "users");
    const result = mailroom(["passwd", users, "alice"], "s\u00e9cret\r\n\n\n");
    expect(result.status).toBe(0);
    const line = (await readFile(users, "utf8")).split("\n").find((text) => text.startsWith("alice:"))!;
    expect(await verifyPassword("s\u00e9cret", parsePasswordHash(line.slice("alice:".length)) as never)).toBe(true);
  });

  test("terminal prompt handles Backspace and Ctrl-C", async () => {
    const users = path.join(dir, "users");
    const typed = onTerminal(["passwd", users, "alice"], "sec\u007fcret\r");
    expect(typed.stdout).toContain("New password: ");
    expect(typed.stdout).not.toContain("cret");
    expect(typed.status).toBe(0);
    const line = (await readFile(users, "utf8")).split("\n").find((text) => text.startsWith("alice:"))!;
    expect(await verifyPassword("secret", parsePasswordHash(line.slice("alice:".length)) as never)).toBe(true);

    const cancelled = onTerminal(["passwd", users, "bob"], "abc\u0003");
    expect(cancelled.stdout).toContain("mailroom: passwd: cancelled; nothing was changed");
    expect(cancelled.status).toBe(1);
    expect(await readFile(users, "utf8")).not.toContain("bob:");
  });
});
