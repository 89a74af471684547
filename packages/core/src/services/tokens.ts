/**
 * Container tokens of the services that the engine and plugins share. They are
 * global symbols, so a plugin that bundles its own copy of @mailroom/core
 * still finds the same service.
 */
export const TOKENS = {
  Logger: Symbol.for("mailroom.Logger"),
  Config: Symbol.for("mailroom.Config"),
  Clock: Symbol.for("mailroom.Clock"),
  DnsResolver: Symbol.for("mailroom.DnsResolver"),
  UserDirectory: Symbol.for("mailroom.UserDirectory"),
  OutboundQueue: Symbol.for("mailroom.OutboundQueue"),
  Hooks: Symbol.for("mailroom.Hooks"),
} as const;

/** A source of the current time, replaceable in tests. */
export interface Clock {
  /** Returns milliseconds since the epoch. */
  now(): number;
  /** Waits `ms` milliseconds, or until the signal aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref?.();
      function done() {
        signal?.removeEventListener("abort", done);
        clearTimeout(timer);
        resolve();
      }
      signal?.addEventListener("abort", done, { once: true });
    }),
};

/** Result of looking up an address in the directory. */
export interface DirectoryEntry {
  /** The mailbox that receives the mail (after aliases and delimiters). */
  mailbox: string;
  domain: string;
}

/**
 * Which local addresses exist. The maildir plugin registers one built from
 * its config; an organisation may register its own (LDAP, SQL) before it.
 * Lookups are case-insensitive and may be asynchronous.
 */
export interface UserDirectory {
  /** Returns the local domains, lower-cased. */
  domains(): string[] | Promise<string[]>;
  /** Resolves `local@domain` to its mailbox, or null when there is none. */
  lookup(
    local: string,
    domain: string,
  ): DirectoryEntry | null | Promise<DirectoryEntry | null>;
  /** Returns every mailbox whose local part is `local`, across all local domains. */
  findLocalPart(local: string): DirectoryEntry[] | Promise<DirectoryEntry[]>;
}

/** A message waiting for outbound delivery, as the queue lists it. */
export interface QueuedMessage {
  id: string;
  sender: string;
  domain: string;
  recipients: string[];
  attempts: number;
  createdAt: number;
  nextAttemptAt: number;
  lastError?: string;
}

/**
 * The outbound queue. plugin-mx provides an on-disk one; the interface is the
 * seam for a shared queue between machines.
 */
export interface OutboundQueue {
  list(): Promise<QueuedMessage[]>;
  get(id: string): Promise<QueuedMessage | undefined>;
  /** Makes the message due now; returns false when there is no such message. */
  retry(id: string): Promise<boolean>;
  /** Removes the message without delivering it; returns false when there is none. */
  remove(id: string): Promise<boolean>;
}
