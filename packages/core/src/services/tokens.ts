import type { Logger } from "pino";
import type { HookArgs, HookName } from "../hooks.js";
import type { HookOutcome } from "../plugins/runner.js";
import { MAX_TIMER_MS } from "../config/units.js";
import { normalizeDomain } from "../smtp/domain.js";

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
  Injector: Symbol.for("mailroom.Injector"),
} as const;

/**
 * Runs a hook through the server's current plugin set (TOKENS.Hooks). Plugins
 * that fire hooks of their own, such as the outbound ones, resolve it when
 * they fire, so a reload's new plugins answer.
 */
export interface HookService {
  run<H extends HookName>(hook: H, args: HookArgs[H], logger: Logger): Promise<HookOutcome>;
  /** Runs the hook in every plugin; answers are ignored and failures only logged. */
  runAll<H extends HookName>(hook: H, args: HookArgs[H], logger: Logger): Promise<void>;
}

/** A message made by the server itself, such as a bounce. */
export interface InjectedMessage {
  /** Envelope sender; "" for the null reverse-path. */
  sender: string;
  recipients: string[];
  /** The whole message, headers and body, with CRLF line ends; a bare CR or LF is stored as CRLF. */
  content: Buffer | string;
}

/** The outcome of injecting a message. */
export interface InjectResult {
  /** True when every accepted recipient was stored (the 250 an SMTP client would get). */
  stored: boolean;
  /** The final reply: the queue reply, or the first rcpt refusal when no recipient was accepted. */
  code: number;
  enhanced?: string;
  message: string;
  accepted: string[];
  refused: { recipient: string; code: number; enhanced?: string; message: string }[];
}

/**
 * Hands a message to the engine as if a trusted local client had sent it
 * (TOKENS.Injector): rcpt picks each recipient's route, then data_post and
 * queue run as for SMTP. The message has no size or line length limit, but
 * one with more than 100 Received headers is refused as a mail loop
 * (554 5.4.6). Bounces reach local and remote senders this way.
 */
export interface MessageInjector {
  inject(message: InjectedMessage, logger?: Logger): Promise<InjectResult>;
}

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
      if (signal?.aborted) return resolve();
      const until = Date.now() + ms;
      let timer: NodeJS.Timeout | undefined;
      function done() {
        signal?.removeEventListener("abort", done);
        clearTimeout(timer);
        resolve();
      }
      // A Node.js timer longer than MAX_TIMER_MS fires after 1 ms, so a
      // longer sleep waits in steps of at most that length.
      function wait() {
        const left = until - Date.now();
        timer = left > MAX_TIMER_MS ? setTimeout(wait, MAX_TIMER_MS) : setTimeout(done, Math.max(left, 0));
        timer.unref?.();
      }
      wait();
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
 * The directory of local addresses. The maildir plugin registers one built from
 * its config; an organisation may register its own (LDAP, SQL) before it.
 * Lookups are case-insensitive and may be asynchronous. The plugins compare
 * domains with normalizeDomain, so a directory may list an international
 * domain as U-labels or as A-labels.
 */
export interface UserDirectory {
  /** Returns the local domains, lower-cased. */
  domains(): string[] | Promise<string[]>;
  /**
   * Resolves `local@domain` to its mailbox, or null when there is none. The
   * bundled plugins pass `domain` as domains() spells it, or "" for the bare
   * `<postmaster>`.
   */
  lookup(
    local: string,
    domain: string,
  ): DirectoryEntry | null | Promise<DirectoryEntry | null>;
  /** Returns every mailbox whose local part is `local`, across all local domains. */
  findLocalPart(local: string): DirectoryEntry[] | Promise<DirectoryEntry[]>;
}

/**
 * Finds a domain among the directory's domains() and returns it as the
 * directory spells it, or undefined when it is not local. `domain` is in the
 * form of normalizeDomain, so U-labels and A-labels match. The result is a
 * promise only when domains() returns one.
 */
export function findListedDomain(
  directory: UserDirectory,
  domain: string,
): string | undefined | Promise<string | undefined> {
  const domains = directory.domains();
  if (Array.isArray(domains)) return findNormalized(domains, domain);
  return Promise.resolve(domains).then((listed) => findNormalized(listed, domain));
}

function findNormalized(domains: readonly string[], domain: string): string | undefined {
  for (const entry of domains) {
    if (normalizeDomain(entry) === domain) return entry;
  }
  return undefined;
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
