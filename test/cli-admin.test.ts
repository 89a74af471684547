import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parsePasswordHash, verifyPassword } from "@mailroom/plugin-auth-file";
import { startTestServer } from "@mailroom/testing";
import { afterEach, beforeEach, describe, expect, test } from "vitest";

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

    const removed = mailroom(["queue", "delete", id, "--config", file]);
    expect(removed.status).toBe(0);
    expect(mailroom(["queue", "list", "--config", file]).stdout).not.toContain("alice@local.test");
    expect(mailroom(["queue", "show", id, "--config", file]).status).toBe(1);
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
    expect(result.stderr).toMatch(/password is empty/);
  });
});
