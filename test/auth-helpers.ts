import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * A plugin that accepts every recipient on route "sink", stores each
 * message's envelope and the connection's user as one JSON line in
 * `envelopes.jsonl`, with `connection.user` as the mail, rcpt and data_post
 * hooks see it and the connection's TLS facts.
 */
const SINK_PLUGIN = `
import { appendFile } from "node:fs/promises";
import path from "node:path";
import { definePlugin, ok } from "@mailroom/core";

export default definePlugin({
  name: "sink",
  setup(context) {
    context.registerRoute("sink");
    const file = path.join(context.configDir, "envelopes.jsonl");
    return {
      mail({ connection, transaction }) {
        transaction.notes.userAtMail = connection.user ?? null;
      },
      rcpt({ connection, transaction }) {
        transaction.notes.userAtRcpt = connection.user ?? null;
        return ok({ route: "sink" });
      },
      data_post({ connection, transaction }) {
        transaction.notes.userAtDataPost = connection.user ?? null;
      },
      async queue({ connection, transaction, recipients }) {
        const line = {
          sender: transaction.sender ? transaction.sender.raw : "",
          recipients: recipients.map((recipient) => recipient.address.raw),
          user: connection.user ?? null,
          tls: connection.tls,
          notes: transaction.notes,
        };
        await appendFile(file, JSON.stringify(line) + "\\n");
        return ok();
      },
    };
  },
});
`;

/**
 * A plugin with fixed credentials: alice / "correct horse" is accepted as
 * "alice", the user "soft" gets DENYSOFT, "weak" gets DENY with its own
 * 534 5.7.9 reply, "boom" makes the handler throw, and everyone else gets
 * CONT (no opinion).
 */
const FIXED_AUTH_PLUGIN = `
import { definePlugin, deny, denySoft, ok } from "@mailroom/core";

export default definePlugin({
  name: "fixed-auth",
  setup() {
    return {
      auth({ username, password }) {
        if (username === "boom") throw new Error("credential store unreachable");
        if (username === "soft") return denySoft();
        if (username === "weak") {
          return deny({ code: 534, enhanced: "5.7.9", message: "Authentication mechanism is too weak" });
        }
        if (username === "alice" && password === "correct horse") return ok();
        return undefined;
      },
    };
  },
});
`;

/** Writes the sink plugin as `sink.ts` into `dir`; returns its `use` value. */
export async function writeSinkPlugin(dir: string): Promise<string> {
  await writeFile(path.join(dir, "sink.ts"), SINK_PLUGIN);
  return "./sink.ts";
}

/** Writes the fixed-credentials auth plugin as `fixed-auth.ts` into `dir`; returns its `use` value. */
export async function writeFixedAuthPlugin(dir: string): Promise<string> {
  await writeFile(path.join(dir, "fixed-auth.ts"), FIXED_AUTH_PLUGIN);
  return "./fixed-auth.ts";
}

/** An envelope as the sink plugin stored it. */
export interface StoredEnvelope {
  sender: string;
  recipients: string[];
  user: string | null;
  tls: { secure: boolean; cipher?: string; protocol?: string; servername?: string };
  notes: Record<string, unknown>;
}

/** Reads every envelope the sink plugin stored in `dir`, oldest first. */
export async function readEnvelopes(dir: string): Promise<StoredEnvelope[]> {
  let text: string;
  try {
    text = await readFile(path.join(dir, "envelopes.jsonl"), "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as StoredEnvelope);
}

/** Encodes an AUTH PLAIN initial response: empty authzid, user, password. */
export function plainToken(user: string, password: string): string {
  return Buffer.from(`\0${user}\0${password}`, "utf8").toString("base64");
}

/** Encodes one AUTH LOGIN step. */
export function base64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}
