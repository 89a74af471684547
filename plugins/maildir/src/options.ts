import { checkDomainName, parseMailbox, z } from "@mailroom/core";
import { ConfigDirectory } from "./directory.js";
import { isSafeSegment, normalizeLocal } from "./names.js";

const mailboxName = z
  .string()
  .min(1)
  .max(64)
  .refine(isSafeSegment, {
    message: 'expected a local part usable as a folder name (no "/", "\\", control characters, "." or "..")',
  })
  .refine((name) => !name.includes("@"), { message: 'expected a local part without "@"' });

const delimiter = z
  .string()
  .max(8)
  .refine((text) => !/[\p{L}\p{N}@.\s"\\]/u.test(text), {
    message: 'expected delimiter characters such as "+" or "-" (no letters, digits, "@", "." or spaces)',
  });

const domainSchema = z.strictObject({
  /** Local parts that have a mailbox of their own. */
  mailboxes: z.array(mailboxName).default([]),
  /** Local part to the mailbox that receives its mail. */
  aliases: z.record(mailboxName, mailboxName).default({}),
  /** Mailbox for local parts that match nothing else; off when absent. */
  catchAll: mailboxName.optional(),
  /** Characters that separate an address extension: `alice+news` goes to alice. */
  recipientDelimiter: delimiter.default("+"),
});

export const optionsSchema = z
  .strictObject({
    /** Folder that contains `<domain>/<mailbox>/Maildir`, relative to the config file. */
    root: z.string().min(1),
    /** Address whose mailbox receives postmaster@ of every local domain and `<postmaster>`. */
    postmaster: z.string().optional(),
    /** Host name written into file names; the machine's host name by default. */
    hostname: z.string().min(1).optional(),
    domains: z.record(z.string(), domainSchema).default({}),
  })
  .superRefine((options, context) => {
    // The first spelling of each normalized domain.
    const seen = new Map<string, string>();
    let allValid = true;
    for (const [name, domain] of Object.entries(options.domains)) {
      const checked = checkDomainName(name);
      if ("error" in checked) {
        context.addIssue({ code: "custom", path: ["domains", name], message: checked.error });
        allValid = false;
        continue;
      }
      const key = checked.domain;
      const first = seen.get(key);
      if (first !== undefined) {
        // bücher.example and xn--bcher-kva.example are one domain, with one folder.
        context.addIssue({
          code: "custom",
          path: ["domains", name],
          message: `domain ${key} is listed twice, as "${first}" and "${name}"`,
        });
      } else {
        seen.set(key, name);
      }
      const mailboxes = new Set(domain.mailboxes.map(normalizeLocal));
      for (const [alias, target] of Object.entries(domain.aliases)) {
        if (!mailboxes.has(normalizeLocal(target))) {
          context.addIssue({
            code: "custom",
            path: ["domains", name, "aliases", alias],
            message: `expected one of the domain's mailboxes, got "${target}"`,
          });
        }
      }
      if (domain.catchAll !== undefined && !mailboxes.has(normalizeLocal(domain.catchAll))) {
        context.addIssue({
          code: "custom",
          path: ["domains", name, "catchAll"],
          message: `expected one of the domain's mailboxes, got "${domain.catchAll}"`,
        });
      }
    }
    if (options.postmaster !== undefined && checkPostmaster(options.postmaster, new Set(seen.keys()), context) && allValid) {
      const directory = new ConfigDirectory(options);
      const parsed = parseMailbox(options.postmaster, true) as { local: string; domain: string };
      if (!directory.lookup(parsed.local, parsed.domain)) {
        context.addIssue({
          code: "custom",
          path: ["postmaster"],
          message: `expected a mailbox or alias of ${parsed.domain}, got "${options.postmaster}"`,
        });
      }
    }
  });

/** Checks the postmaster address's syntax and domain; returns true when both are fine. */
function checkPostmaster(postmaster: string, domains: Set<string>, context: z.RefinementCtx): boolean {
  const parsed = parseMailbox(postmaster, true);
  if ("error" in parsed) {
    context.addIssue({
      code: "custom",
      path: ["postmaster"],
      message: `expected an address such as postmaster@example.test (${parsed.error})`,
    });
    return false;
  }
  const checked = checkDomainName(parsed.domain);
  if ("error" in checked) {
    context.addIssue({ code: "custom", path: ["postmaster"], message: checked.error });
    return false;
  }
  if (!domains.has(checked.domain)) {
    context.addIssue({
      code: "custom",
      path: ["postmaster"],
      message: `expected an address in one of the local domains (${[...domains].join(", ") || "none"})`,
    });
    return false;
  }
  return true;
}

export type MaildirOptions = z.output<typeof optionsSchema>;
export type DomainOptions = z.output<typeof domainSchema>;
