// A full file system under the mailboxes and under the outbound queue: the
// client gets 452 4.3.1, nothing partial stays, and mail flows again by
// itself once space is freed.
import { existsSync, mkdirSync, readdirSync, rmSync, truncateSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startTestServer, type TestServer } from "@mailroom/testing";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { fill, mountTmpfs, readMaildir, report, scale, unmount } from "./fault-kit.js";

async function send(server: TestServer, to: string, id: string, lines = 1) {
  const client = await server.connect();
  const replies = await client.send({
    from: "sender@client.test",
    to: [to],
    message: `X-Test-Id: ${id}\r\nSubject: disk\r\n\r\n${`${"z".repeat(70)}\r\n`.repeat(lines)}END ${id}\r\n`,
  });
  const noop = await client.command("NOOP");
  client.close();
  return { rcpt: replies[2]!, reply: replies.at(-1)!, noop };
}

/** Lists the files anywhere under `dir`, as paths relative to it. */
function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .sort();
}

interface Setup {
  name: string;
  to: string;
  /** The maildir that receives the messages, when they go to one. */
  maildir?: (mount: string) => string;
  /** Server settings on top of the hostname. */
  server?: (mount: string) => Record<string, unknown>;
  plugins: (mount: string) => Record<string, unknown>[];
  /** Files where a stored message is visible. */
  visible: (mount: string) => string[];
  /** The folder where a partial file would be left. */
  scratch: (mount: string) => string;
}

const SETUPS: Setup[] = [
  {
    name: "maildir",
    to: "bob@local.test",
    plugins: (mount) => [
      { use: "@mailroom/plugin-maildir", with: { root: mount, domains: { "local.test": { mailboxes: ["bob"] } } } },
    ],
    maildir: (mount) => path.join(mount, "local.test/bob/Maildir"),
    visible: (mount) => files(path.join(mount, "local.test/bob/Maildir/new")),
    scratch: (mount) => path.join(mount, "local.test/bob/Maildir/tmp"),
  },
  {
    name: "outbound queue",
    to: "carol@far.test",
    plugins: (mount) => [
      { use: "@mailroom/plugin-relay", with: { trustedNetworks: ["127.0.0.1"] } },
      { use: "@mailroom/plugin-mx", with: { queueDir: mount, deliver: false } },
    ],
    visible: (mount) => files(path.join(mount, "active")),
    scratch: (mount) => path.join(mount, "tmp"),
  },
  {
    name: "spool folder",
    to: "bob@local.test",
    // Small messages stay in memory by default; these must reach the spool file.
    server: (mount) => ({ spoolDir: mount, memorySpool: { perMessage: 0 } }),
    plugins: (mount) => [
      {
        use: "@mailroom/plugin-maildir",
        with: { root: path.join(path.dirname(mount), "mail"), domains: { "local.test": { mailboxes: ["bob"] } } },
      },
    ],
    maildir: (mount) => path.join(path.dirname(mount), "mail/local.test/bob/Maildir"),
    visible: (mount) => files(path.join(path.dirname(mount), "mail/local.test/bob/Maildir/new")),
    scratch: (mount) => mount,
  },
];

describe.each(SETUPS)("a full file system under the $name", (setup) => {
  let base: string;
  let mount: string;
  let skip: string | undefined;
  let server: TestServer | undefined;

  beforeAll(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), "mailroom-full-"));
    mount = path.join(base, "disk");
    mkdirSync(mount);
    skip = mountTmpfs(mount, "1m");
    if (skip) return;
    server = await startTestServer(
      { server: { hostname: "mx.full.test", ...setup.server?.(mount) }, plugins: setup.plugins(mount) },
      { dir: base },
    );
  });

  afterAll(async () => {
    await server?.stop();
    if (!skip) unmount(mount);
    await rm(base, { recursive: true, force: true });
  });

  test("452 4.3.1, nothing partial, then recovers", async (context) => {
    if (skip) context.skip(skip);
    const first = await send(server!, setup.to, "before");
    expect(first.reply.code).toBe(250);
    const stored = setup.visible(mount);
    expect(stored.length).toBeGreaterThan(0);

    // The long form leaves 0 to 56 KiB free and sends up to 48 KiB, so the
    // write fails at different steps: the message body, its state, the rename.
    const rounds = scale(1, 24);
    let refused = 0;
    const expected = ["before"];
    for (let round = 0; round < rounds; round++) {
      const filler = path.join(mount, "filler");
      const size = fill(filler);
      const free = (round % 8) * 8192;
      if (free) truncateSync(filler, size - free);
      const id = `full-${round}`;
      const full = await send(server!, setup.to, id, round === 0 ? 30_000 : Math.floor(Math.random() * 700));
      expect(full.rcpt.code).toBe(250);
      expect(full.noop.code).toBe(250);
      expect(files(setup.scratch(mount)).filter((name) => name !== "filler")).toEqual([]);
      if (free === 0 || full.reply.code !== 250) {
        expect([full.reply.code, full.reply.enhanced]).toEqual([452, "4.3.1"]);
        expect(setup.visible(mount)).toEqual(stored);
        refused += 1;
      } else {
        expected.push(id);
      }

      rmSync(filler);
      const again = await send(server!, setup.to, `after-${round}`);
      expect(again.reply.code).toBe(250);
      expected.push(`after-${round}`);
      stored.splice(0, stored.length, ...setup.visible(mount));
    }
    if (setup.maildir) {
      const entries = readMaildir(setup.maildir(mount));
      expect(entries.map((entry) => entry.testId).sort()).toEqual(expected.sort());
      expect(entries.filter((entry) => entry.lastLine !== `END ${entry.testId}`)).toEqual([]);
    } else {
      expect(setup.visible(mount).filter((name) => name.endsWith(".msg"))).toHaveLength(expected.length);
    }
    report(`full disk under the ${setup.name}`, {
      load: "one client at a time on a 1 MiB tmpfs",
      faults: `${rounds} fill(s) of the file system, leaving 0 to 56 KiB free, each freed again while the server runs`,
      inputs: `${rounds * 2 + 1} messages, one of 2 MiB and the rest up to 48 KiB: ${refused} refused with 452 4.3.1, ${expected.length} accepted and stored whole`,
      lost: 0,
    });
  });
});
