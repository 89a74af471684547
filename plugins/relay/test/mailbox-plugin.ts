/**
 * A stand-in mailbox owner for end-to-end tests of the relay and vrfy
 * plugins. It registers an in-memory UserDirectory during setup (as the
 * maildir plugin does), accepts known local recipients on the route
 * "mailbox", rejects unknown ones with 550 5.1.1, stores each message as a
 * file under `<store>/<mailbox>/`, and accepts AUTH for the configured users.
 * It also stands in for the outbound queue: recipients relayed on the route
 * "outbound" are stored under `<store>/outbound/`.
 * The command `XRELAYING` returns `250 2.0.0 relaying=<connection.relaying>`.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { buffer } from "node:stream/consumers";
import {
  definePlugin,
  deny,
  ok,
  TOKENS,
  z,
  type DirectoryEntry,
  type UserDirectory,
} from "@mailroom/core";

/** A UserDirectory over a fixed list of mailboxes and aliases; it counts its calls. */
export class MemoryDirectory implements UserDirectory {
  calls = 0;
  private readonly entries = new Map<string, DirectoryEntry>();

  constructor(mailboxes: string[], aliases: Record<string, string> = {}) {
    for (const mailbox of mailboxes) this.entries.set(mailbox.toLowerCase(), split(mailbox));
    for (const [alias, target] of Object.entries(aliases)) {
      this.entries.set(alias.toLowerCase(), split(target));
    }
  }

  domains(): string[] {
    this.calls += 1;
    return [...new Set([...this.entries.keys()].map((key) => split(key).domain))];
  }

  lookup(local: string, domain: string): DirectoryEntry | null {
    this.calls += 1;
    return this.entries.get(`${local}@${domain}`.toLowerCase()) ?? null;
  }

  findLocalPart(local: string): DirectoryEntry[] {
    this.calls += 1;
    const localPart = local.toLowerCase();
    return [...this.entries]
      .filter(([key]) => split(key).mailbox === localPart)
      .map(([, entry]) => entry);
  }
}

function split(address: string): DirectoryEntry {
  const at = address.lastIndexOf("@");
  return { mailbox: address.slice(0, at).toLowerCase(), domain: address.slice(at + 1).toLowerCase() };
}

export default definePlugin({
  name: "test-mailboxes",
  options: z.strictObject({
    mailboxes: z.array(z.string()),
    aliases: z.record(z.string(), z.string()).default({}),
    /** Where the bare `<postmaster>` recipient is delivered. */
    postmaster: z.string(),
    /** Folder for stored messages, relative to the config folder. */
    store: z.string().default("mail"),
    /** AUTH user names and passwords. */
    users: z.record(z.string(), z.string()).default({}),
  }),
  setup({ options, container, configDir, registerRoute }) {
    const directory = new MemoryDirectory(options.mailboxes, options.aliases);
    container.register(TOKENS.UserDirectory, { useValue: directory });
    registerRoute("mailbox");
    registerRoute("outbound");
    const store = path.resolve(configDir, options.store);
    let stored = 0;

    const mailboxOf = (local: string, domain: string): string | undefined => {
      if (domain === "") return options.postmaster.toLowerCase();
      const entry = directory.lookup(local, domain);
      return entry ? `${entry.mailbox}@${entry.domain}` : undefined;
    };

    return {
      auth({ username, password }) {
        return options.users[username] === password ? ok() : undefined;
      },
      unknown_command({ connection, verb }) {
        if (verb !== "XRELAYING") return undefined;
        return ok({ code: 250, enhanced: "2.0.0", message: `relaying=${connection.relaying}` });
      },
      rcpt({ address }) {
        if (address.domain !== "" && !directory.domains().includes(address.domain)) return undefined;
        if (mailboxOf(address.local, address.domain)) return ok({ route: "mailbox" });
        return deny({ code: 550, enhanced: "5.1.1", message: "Mailbox not found" });
      },
      async queue({ message, recipients, route }) {
        const copy = await buffer(message.storedCopy());
        for (const recipient of recipients) {
          const mailbox = route === "outbound" ? "outbound" : mailboxOf(recipient.address.local, recipient.address.domain)!;
          const folder = path.join(store, mailbox);
          await mkdir(folder, { recursive: true });
          stored += 1;
          await writeFile(path.join(folder, `${stored}.eml`), copy);
        }
        return ok();
      },
    };
  },
});
