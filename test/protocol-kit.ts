/**
 * Shared setup for the protocol tests: a server with a small local plugin
 * that accepts a few users of local.example, refuses other local users with
 * 550 5.1.1 and writes each accepted message into a folder, so tests can check
 * on disk what was stored.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";

const PLUGIN = `
import { randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { definePlugin, deny, ok, z } from "@mailroom/core";

export default definePlugin({
  name: "local-store",
  options: z.object({
    domain: z.string(),
    users: z.array(z.string()),
    folder: z.string(),
    dataDelay: z.number().default(0),
  }),
  setup(context) {
    const { domain, users, folder, dataDelay } = context.options;
    context.registerRoute("local-store");
    return {
      async data() {
        if (dataDelay) await new Promise((resolve) => setTimeout(resolve, dataDelay));
      },
      rcpt({ address }) {
        const local = address.local.toLowerCase();
        if (address.domain === "" && local === "postmaster") return ok({ route: "local-store" });
        if (address.domain !== domain) return undefined;
        if (users.includes(local)) return ok({ route: "local-store" });
        return deny({ code: 550, enhanced: "5.1.1", message: "No such user here" });
      },
      async queue({ message, recipients, transaction }) {
        await mkdir(folder, { recursive: true });
        const name = randomUUID();
        const target = path.join(folder, name + ".eml");
        await pipeline(message.storedCopy(), createWriteStream(target + ".tmp"));
        await writeFile(
          path.join(folder, name + ".json"),
          JSON.stringify({
            sender: transaction.sender ? transaction.sender.address : "",
            recipients: recipients.map((recipient) => recipient.address.address),
          }),
        );
        await rename(target + ".tmp", target);
        return ok();
      },
    };
  },
});
`;

export interface StoredMessage {
  sender: string;
  recipients: string[];
  /** The stored copy: trace headers, then the DATA bytes. */
  text: string;
}

export interface ProtocolServer extends TestServer {
  /** Every message stored so far. */
  stored(): Promise<StoredMessage[]>;
  /** Connects and sends EHLO. */
  ready(): Promise<SmtpTestClient>;
}

/**
 * Starts a server for local.example with the users bob, alice and
 * postmaster. `server` is merged into the config's server section;
 * `plugin.dataDelay` makes the data hook wait that many milliseconds.
 */
export async function startProtocolServer(
  server: Record<string, unknown> = {},
  plugin: { dataDelay?: number } = {},
): Promise<ProtocolServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-protocol-"));
  await writeFile(path.join(dir, "local-store.ts"), PLUGIN);
  const folder = path.join(dir, "stored");
  const started = await startTestServer(
    {
      server: { hostname: "mx.local.example", ...server },
      plugins: [
        {
          use: "./local-store.ts",
          with: { domain: "local.example", users: ["bob", "alice", "postmaster"], folder, ...plugin },
        },
      ],
    },
    { dir },
  );
  return {
    ...started,
    async stored() {
      const names = await readdir(folder).catch(() => [] as string[]);
      const messages: StoredMessage[] = [];
      for (const name of names.filter((entry) => entry.endsWith(".eml")).sort()) {
        const text = await readFile(path.join(folder, name), "latin1");
        const meta = JSON.parse(await readFile(path.join(folder, name.replace(/\.eml$/, ".json")), "utf8"));
        messages.push({ ...meta, text });
      }
      return messages;
    },
    async ready() {
      const client = await started.connect();
      const reply = await client.command("EHLO client.example");
      if (reply.code !== 250) throw new Error(`EHLO refused: ${reply.raw}`);
      return client;
    },
    async stop() {
      await started.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Returns `code enhanced` of a reply, the form the tests compare. */
export function status(reply: { code: number; enhanced: string | undefined }): string {
  return reply.enhanced ? `${reply.code} ${reply.enhanced}` : String(reply.code);
}
