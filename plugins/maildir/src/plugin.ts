import { readdir, stat, unlink } from "node:fs/promises";
import path from "node:path";
import {
  definePlugin,
  deny,
  denySoft,
  findListedDomain,
  normalizeDomain,
  ok,
  TOKENS,
  type Address,
  type DirectoryEntry,
  type HookResult,
  type Logger,
  type UserDirectory,
} from "@mailroom/core";
import { CONFIG_DIRECTORY, ConfigDirectory } from "./directory.js";
import { deliverToMaildir, MaildirError, type DeliverOptions } from "./deliver.js";
import { isSafeSegment } from "./names.js";
import { optionsSchema } from "./options.js";

export const ROUTE = "maildir";

/**
 * Returns the Maildir folder of a mailbox: `<root>/<domain>/<mailbox>/Maildir`.
 * The caller passes the domain in the form of normalizeDomain, so an
 * international domain has the folder of its A-label form.
 */
export function maildirPath(root: string, entry: DirectoryEntry): string {
  return path.join(root, entry.domain, entry.mailbox, "Maildir");
}

/** Picks the directory service: one already registered, or a new one from the options. */
function directoryFor(
  container: { isRegistered(token: symbol, recursive?: boolean): boolean; resolve<T>(token: symbol): T },
  register: (directory: UserDirectory) => void,
  build: () => ConfigDirectory,
): UserDirectory {
  if (container.isRegistered(TOKENS.UserDirectory, true)) {
    const existing = container.resolve<UserDirectory>(TOKENS.UserDirectory);
    // Another maildir entry's directory is replaced; anyone else's is used
    // as it is. A reload gets a container of its own, so what the previous
    // config registered is never seen here.
    if (!(existing as unknown as Record<symbol, unknown>)[CONFIG_DIRECTORY]) return existing;
  }
  const directory = build();
  register(directory);
  return directory;
}

function isUsable(entry: DirectoryEntry): boolean {
  return isSafeSegment(entry.mailbox) && isSafeSegment(entry.domain);
}

/**
 * Finds the mailbox of a recipient, or returns "foreign" for a domain that is
 * not local. Domains compare in the form of normalizeDomain, so a recipient
 * domain and a directory domain match as U-labels or as A-labels. The
 * directory is asked with its own spelling of the domain, as domains()
 * listed it.
 */
async function resolveRecipient(
  directory: UserDirectory,
  address: Address,
): Promise<DirectoryEntry | null | "foreign"> {
  // A domain without an A-label form (invalid IDNA) cannot be local.
  const domain = normalizeDomain(address.domain);
  if (domain === null) return "foreign";
  let listed = "";
  if (domain !== "") {
    const found = await findListedDomain(directory, domain);
    if (found === undefined) return "foreign";
    listed = found;
  }
  const entry = await directory.lookup(address.local, listed);
  // Only the bare <postmaster> arrives without a domain; without a postmaster
  // mailbox it is left to the other plugins.
  if (!entry) return domain === "" ? "foreign" : null;
  // The folder is named after the A-label form; a domain without one keeps the directory's spelling.
  return { mailbox: entry.mailbox.toLowerCase(), domain: normalizeDomain(entry.domain) ?? entry.domain.toLowerCase() };
}

const NOTE = "maildir.entries";

/**
 * Warns about the folder of an international domain under its U-label name,
 * where versions that compared domains as written stored its mail. Readers
 * of the A-label folder do not see those messages until they are moved.
 */
async function warnAboutULabelFolders(root: string, domains: string[], logger: Logger): Promise<void> {
  for (const name of domains) {
    const written = name.toLowerCase().replace(/\.$/, "");
    const domain = normalizeDomain(name);
    if (domain === null || domain === written) continue;
    const old = path.join(root, written);
    const isFolder = await stat(old).then((entry) => entry.isDirectory(), () => false);
    if (!isFolder) continue;
    logger.warn(
      { domain: name, folder: old, expected: path.join(root, domain) },
      "a mail folder exists under the U-label name of a domain; mail for it is stored under the A-label name, so move the mailboxes there",
    );
  }
}

export default definePlugin({
  name: "maildir",
  options: optionsSchema,
  setup(context) {
    const { options, logger } = context;
    const root = path.resolve(context.configDir, options.root);
    const directory = directoryFor(
      context.container,
      (value) => context.container.register(TOKENS.UserDirectory, { useValue: value }),
      () => new ConfigDirectory(options),
    );
    const deliverOptions: DeliverOptions = options.hostname ? { hostname: options.hostname } : {};
    context.registerRoute(ROUTE);
    void warnAboutULabelFolders(root, Object.keys(options.domains), logger);

    return {
      async rcpt({ address, transaction }) {
        const entry = await resolveRecipient(directory, address);
        if (entry === "foreign") return undefined;
        if (entry === null) {
          transaction.logger.info({ recipient: address.address }, "no such local mailbox");
          return deny({ code: 550, enhanced: "5.1.1", message: "Mailbox unavailable: no such user here" });
        }
        if (!isUsable(entry)) {
          transaction.logger.error({ recipient: address.address, entry }, "directory returned a mailbox name unusable as a folder");
          return denySoft({ code: 451, enhanced: "4.3.0", message: "Temporary local problem, try again later" });
        }
        const notes = (transaction.notes[NOTE] ??= new Map()) as Map<string, DirectoryEntry>;
        notes.set(address.raw, entry);
        return ok({ route: ROUTE });
      },

      async queue({ message, recipients, transaction, accepted }) {
        const notes = transaction.notes[NOTE] as Map<string, DirectoryEntry> | undefined;
        // One copy per mailbox, even when an alias and its mailbox were both named.
        const targets = new Map<string, DirectoryEntry>();
        for (const recipient of recipients) {
          const entry = notes?.get(recipient.address.raw) ?? (await resolveRecipient(directory, recipient.address));
          if (entry === null || entry === "foreign" || !isUsable(entry)) {
            transaction.logger.error({ recipient: recipient.address.address }, "recipient no longer resolves to a mailbox");
            return denySoft({ code: 451, enhanced: "4.3.0", message: "Message not stored, try again later" });
          }
          targets.set(maildirPath(root, entry), entry);
        }
        const outcome = await deliverAll(targets, message, deliverOptions, transaction);
        if (outcome.stored.length > 0) {
          void accepted.then((yes) => (yes ? undefined : removeCopies(outcome.stored, transaction.logger, "message rejected after it was stored")));
        }
        return outcome.answer;
      },
    };
  },
});

/**
 * The transaction as a log destination: its child logger is made only when
 * something is logged, which saves a pino child() per message.
 */
interface LogSource {
  readonly logger: Logger;
  logs(level: "debug"): boolean;
}

/**
 * Delivers one copy to each maildir. When any delivery fails, the copies
 * already in new/ are removed again, so the client's retry does not
 * duplicate them. `stored` lists the files kept.
 */
async function deliverAll(
  targets: Map<string, DirectoryEntry>,
  message: {
    storedCopy(options: { deliveredTo?: string }): AsyncIterable<Uint8Array>;
    storedCopyBytes?(options: { deliveredTo?: string }): Uint8Array[] | undefined;
  },
  options: DeliverOptions,
  log: LogSource,
): Promise<{ answer: HookResult; stored: string[] }> {
  const results = await Promise.allSettled(
    [...targets].map(async ([maildir, entry]) => {
      const deliveredTo = `${entry.mailbox}@${entry.domain}`;
      // A message kept in memory is written with one call.
      const source = message.storedCopyBytes?.({ deliveredTo }) ?? message.storedCopy({ deliveredTo });
      const delivery = await deliverToMaildir(maildir, source, options);
      if (log.logs("debug")) log.logger.debug({ path: delivery.path, size: delivery.size }, "delivered to maildir");
      return delivery;
    }),
  );
  const delivered = results.flatMap((result) => (result.status === "fulfilled" ? [result.value.path] : []));
  const failures = results.flatMap((result) => (result.status === "rejected" ? [result.reason as unknown] : []));
  if (failures.length === 0) return { answer: ok(), stored: delivered };

  const logger = log.logger;
  for (const error of failures) {
    const details = error instanceof MaildirError ? { path: error.path, step: error.step, code: error.code } : {};
    logger.error({ err: error, ...details }, "maildir delivery failed");
  }
  if (delivered.length > 0) await removeCopies(delivered, logger, "message not stored in every mailbox");
  if (failures.some((error) => error instanceof MaildirError && error.isFull)) {
    return { answer: denySoft({ code: 452, enhanced: "4.3.1", message: "Insufficient system storage, try again later" }), stored: [] };
  }
  return { answer: denySoft({ code: 451, enhanced: "4.3.0", message: "Message not stored, try again later" }), stored: [] };
}

/**
 * Removes delivered copies of a message that the client will send again. A
 * copy that a mail reader already moved to cur/ is removed there, under its
 * new name (the old name followed by ":2,flags", or by "," and size fields).
 * NOTE: a reader may already have shown such a copy to the user.
 */
async function removeCopies(files: string[], logger: Logger, reason: string): Promise<void> {
  const removed: string[] = [];
  for (const file of files) {
    try {
      const where = await removeCopy(file);
      if (where) removed.push(where);
      else logger.warn({ file, reason }, "copy of a rejected message not found in new/ or cur/; a reader took it");
    } catch (error) {
      logger.error({ err: error, file, reason }, "copy of a rejected message not removed; the retry duplicates it");
    }
  }
  if (removed.length > 0) logger.info({ files: removed, reason }, "removed the copies of a rejected message");
}

/** Removes a delivered file from new/, or from cur/ where a reader moved it; returns the path removed, if any. */
async function removeCopy(file: string): Promise<string | undefined> {
  try {
    await unlink(file);
    return file;
  } catch (error) {
    if ((error as { code?: string }).code !== "ENOENT") throw error;
  }
  const name = path.basename(file);
  const cur = path.join(path.dirname(path.dirname(file)), "cur");
  const entries = await readdir(cur).catch(() => [] as string[]);
  const moved = entries.find((entry) => entry === name || entry.startsWith(`${name}:`) || entry.startsWith(`${name},`));
  if (!moved) return undefined;
  try {
    await unlink(path.join(cur, moved));
    return path.join(cur, moved);
  } catch (error) {
    // Moved on again (or deleted) meanwhile.
    if ((error as { code?: string }).code === "ENOENT") return undefined;
    throw error;
  }
}
