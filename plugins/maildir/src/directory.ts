import { normalizeDomain, parseMailbox, type DirectoryEntry, type UserDirectory } from "@mailroom/core";
import { normalizeLocal } from "./names.js";
import type { DomainOptions } from "./options.js";

interface Domain {
  mailboxes: Set<string>;
  aliases: Map<string, string>;
  catchAll: string | undefined;
  delimiters: string;
}

/** Marks directories built by this plugin, so that a second maildir entry builds its own. */
export const CONFIG_DIRECTORY = Symbol.for("mailroom.maildir.ConfigDirectory");

/** The part of the plugin's options the directory is built from. */
export interface DirectoryConfig {
  domains: Record<string, Partial<DomainOptions>>;
  postmaster?: string | undefined;
}

/**
 * The UserDirectory built from the maildir options. Lookups are
 * case-insensitive, and domains ignore a trailing dot and match as U-labels
 * or A-labels. The domains it returns are in the form of normalizeDomain
 * (A-labels), and the mailbox names are lower-case.
 */
export class ConfigDirectory implements UserDirectory {
  readonly [CONFIG_DIRECTORY] = true;
  private readonly byDomain = new Map<string, Domain>();
  private readonly postmaster: { local: string; domain: string } | undefined;

  constructor(config: DirectoryConfig) {
    for (const [name, options] of Object.entries(config.domains)) {
      const domain = normalizeDomain(name);
      if (domain === null || domain === "") throw new Error(`domains: invalid domain name "${name}"`);
      this.byDomain.set(domain, {
        mailboxes: new Set((options.mailboxes ?? []).map(normalizeLocal)),
        aliases: new Map(
          Object.entries(options.aliases ?? {}).map(([alias, target]) => [
            normalizeLocal(alias),
            normalizeLocal(target),
          ]),
        ),
        catchAll: options.catchAll === undefined ? undefined : normalizeLocal(options.catchAll),
        delimiters: options.recipientDelimiter ?? "+",
      });
    }
    if (config.postmaster !== undefined) {
      const parsed = parseMailbox(config.postmaster, true);
      const domain = "error" in parsed ? null : normalizeDomain(parsed.domain);
      if ("error" in parsed || domain === null) throw new Error(`postmaster: invalid address "${config.postmaster}"`);
      this.postmaster = { local: normalizeLocal(parsed.local), domain };
    }
  }

  domains(): string[] {
    return [...this.byDomain.keys()];
  }

  /**
   * Resolves an address to its mailbox. `postmaster` in any local domain, or
   * with an empty domain (the bare `<postmaster>`), goes to the postmaster
   * address when one is configured.
   */
  lookup(local: string, domain: string): DirectoryEntry | null {
    const name = normalizeLocal(local);
    const where = normalizeDomain(domain);
    if (where === null) return null;
    if (name === "postmaster" && this.postmaster && (where === "" || this.byDomain.has(where))) {
      return this.resolve(this.postmaster.local, this.postmaster.domain, true, false);
    }
    return this.resolve(name, where, true, true);
  }

  /**
   * Returns the mailbox `local` reaches in each local domain. Catch-all
   * mailboxes are left out: they would match any word.
   */
  findLocalPart(local: string): DirectoryEntry[] {
    const name = normalizeLocal(local);
    const found: DirectoryEntry[] = [];
    for (const domain of this.byDomain.keys()) {
      const entry = this.resolve(name, domain, false, true);
      if (entry) found.push(entry);
    }
    return found;
  }

  /** Mailbox, then alias, then the same without the extension, then catch-all. */
  private resolve(
    local: string,
    domain: string,
    catchAll: boolean,
    postmaster: boolean,
  ): DirectoryEntry | null {
    const config = this.byDomain.get(domain);
    if (!config) return null;
    const direct = exact(config, local);
    if (direct) return { mailbox: direct, domain };

    const base = stripExtension(local, config.delimiters);
    if (base !== undefined) {
      if (base === "postmaster" && postmaster && this.postmaster) {
        return this.resolve(this.postmaster.local, this.postmaster.domain, true, false);
      }
      const mailbox = exact(config, base);
      if (mailbox) return { mailbox, domain };
    }
    if (catchAll && config.catchAll) return { mailbox: config.catchAll, domain };
    return null;
  }
}

function exact(config: Domain, local: string): string | undefined {
  if (config.mailboxes.has(local)) return local;
  return config.aliases.get(local);
}

/** Returns the local part before the first delimiter, or undefined when there is none. */
function stripExtension(local: string, delimiters: string): string | undefined {
  if (delimiters === "") return undefined;
  for (let i = 1; i < local.length; i++) {
    if (delimiters.includes(local[i]!)) return local.slice(0, i);
  }
  return undefined;
}
