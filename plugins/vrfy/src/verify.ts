import {
  deny,
  findListedDomain,
  formatAddress,
  normalizeDomain,
  ok,
  type Answer,
  type DirectoryEntry,
  type UserDirectory,
} from "@mailroom/core";
import type { VrfyTarget } from "./argument.js";

/** The reply to a VRFY that may not or cannot be answered for real. */
export const AMBIGUOUS: Answer = ok({
  code: 252,
  enhanced: "2.1.5",
  message: "Cannot verify the user, but will accept the message",
});

/**
 * Replies with the mailbox in the `local-part@domain` form of RFC 5321
 * section 3.5.1. The domain is given as A-labels, which a client without
 * SMTPUTF8 can read.
 */
function found(entry: DirectoryEntry): Answer {
  const domain = normalizeDomain(entry.domain) ?? entry.domain;
  return ok({ code: 250, enhanced: "2.1.5", message: formatAddress(entry.mailbox, domain) });
}

const NOT_FOUND = deny({ code: 550, enhanced: "5.1.1", message: "Mailbox not found" });
const AMBIGUOUS_LOCAL_PART = deny({
  code: 553,
  enhanced: "5.1.4",
  message: "User ambiguous, add the domain",
});
const NOT_LOCAL = ok({ code: 252, enhanced: "2.1.5", message: "Not a local address, cannot verify it" });

/**
 * Looks the target up in the directory and returns the real answer: 250 with
 * the mailbox, 550 5.1.1 when a local address has none, 553 5.1.4 when a bare
 * local part exists in more than one local domain, and 252 for an address at
 * a domain that is not local. Domains match as U-labels or A-labels, and the
 * directory is asked with its own spelling of the domain.
 */
export async function verifyTarget(target: VrfyTarget, directory: UserDirectory): Promise<Answer> {
  if (target.domain !== undefined) {
    const wanted = normalizeDomain(target.domain);
    const listed = wanted === null ? undefined : await findListedDomain(directory, wanted);
    if (listed === undefined) return NOT_LOCAL;
    const entry = await directory.lookup(target.local, listed);
    return entry ? found(entry) : NOT_FOUND;
  }

  const entries = await directory.findLocalPart(target.local);
  const distinct = new Map<string, DirectoryEntry>();
  for (const entry of entries) {
    const domain = normalizeDomain(entry.domain) ?? entry.domain.toLowerCase();
    distinct.set(`${entry.mailbox.toLowerCase()}@${domain}`, entry);
  }
  if (distinct.size === 0) return NOT_FOUND;
  if (distinct.size > 1) return AMBIGUOUS_LOCAL_PART;
  return found([...distinct.values()][0]!);
}
