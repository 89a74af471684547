import { setTimeout as sleep } from "node:timers/promises";
import { container, TOKENS, type DirectoryEntry, type UserDirectory } from "@mailroom/core";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterEach, expect, test } from "vitest";
import { PLUGINS } from "../plugins/relay/test/helpers.js";
import { MemoryDirectory } from "../plugins/relay/test/mailbox-plugin.js";

/**
 * A directory whose hits are slow, as a remote directory's often are. A VRFY
 * path that consulted it would take far longer for existing users.
 */
class SlowHitDirectory implements UserDirectory {
  private readonly entries: MemoryDirectory;

  constructor(mailboxes: string[]) {
    this.entries = new MemoryDirectory(mailboxes);
  }

  /** Number of directory calls made so far. */
  get calls(): number {
    return this.entries.calls;
  }

  domains(): string[] {
    return this.entries.domains();
  }

  async lookup(local: string, domain: string): Promise<DirectoryEntry | null> {
    const entry = this.entries.lookup(local, domain);
    if (entry) await sleep(20);
    return entry;
  }

  async findLocalPart(local: string): Promise<DirectoryEntry[]> {
    const found = this.entries.findLocalPart(local);
    if (found.length > 0) await sleep(20);
    return found;
  }
}

const ROUNDS = 100;
const WARMUP = 10;

let server: TestServer | undefined;
let client: SmtpTestClient | undefined;

afterEach(async () => {
  client?.close();
  await server?.stop();
  client = undefined;
  server = undefined;
});

async function start(vrfy: Record<string, unknown>, relay: Record<string, unknown>) {
  const directory = new SlowHitDirectory(["bob@local.example", "postmaster@local.example"]);
  const parent = container.createChildContainer();
  parent.register(TOKENS.UserDirectory, { useValue: directory });
  server = await startTestServer(
    {
      server: { hostname: "mx.local.example" },
      plugins: [
        { use: PLUGINS.relay, with: relay },
        { use: PLUGINS.vrfy, with: vrfy },
      ],
    },
    { container: parent },
  );
  client = await server.connect();
  await client.command("EHLO client.example");
  return { client, directory };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * Times VRFY for an existing and a missing user, alternating which goes
 * first so that drift affects both alike. Returns the ratio of the medians
 * (existing / missing) and every reply.
 */
async function measure(session: SmtpTestClient, rounds: number) {
  const existing: number[] = [];
  const missing: number[] = [];
  const replies = new Set<string>();
  const timeOne = async (command: string, into: number[] | undefined) => {
    const started = performance.now();
    const reply = await session.command(command);
    const elapsed = performance.now() - started;
    into?.push(elapsed);
    replies.add(`${command.split(" ")[1]} ${reply.raw}`);
    return reply;
  };
  for (let round = 0; round < WARMUP + rounds; round++) {
    const record = round >= WARMUP;
    const first = round % 2 === 0;
    if (first) await timeOne("VRFY bob", record ? existing : undefined);
    await timeOne("VRFY nosuch", record ? missing : undefined);
    if (!first) await timeOne("VRFY bob", record ? existing : undefined);
  }
  return { ratio: median(existing) / median(missing), replies };
}

test("ambiguous VRFY takes similar time for any user", async () => {
  const { client, directory } = await start({}, {});
  const { ratio, replies } = await measure(client, ROUNDS);
  expect(ratio).toBeGreaterThan(0.5);
  expect(ratio).toBeLessThan(2);
  expect(directory.calls).toBe(0);
  expect([...replies].sort()).toEqual([
    "bob 252 2.1.5 Cannot verify the user, but will accept the message",
    "nosuch 252 2.1.5 Cannot verify the user, but will accept the message",
  ]);
});

test("untrusted client in verify mode gets similar times", async () => {
  const { client, directory } = await start({ mode: "verify" }, {});
  const { ratio } = await measure(client, ROUNDS);
  expect(ratio).toBeGreaterThan(0.5);
  expect(ratio).toBeLessThan(2);
  expect(directory.calls).toBe(0);
});

test("measurement detects a directory lookup", async () => {
  // Control: a trusted client in verify mode makes the slow lookup, and the
  // same measurement must see it. Each missing user is a failed lookup, so
  // the limit is raised above the number of tries.
  const { client, directory } = await start(
    { mode: "verify", maxFailures: 1000 },
    { trustedNetworks: ["127.0.0.0/8"] },
  );
  const { ratio, replies } = await measure(client, 20);
  expect(directory.calls).toBeGreaterThan(0);
  expect(replies).toContain("bob 250 2.1.5 bob@local.example");
  expect(ratio).toBeGreaterThan(2);
});
