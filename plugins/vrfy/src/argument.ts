import { parseMailbox } from "@mailroom/core";

/** The address a VRFY argument names: a local part, with a domain when one was given. */
export interface VrfyTarget {
  local: string;
  /** Lower-case domain, or undefined for a bare local part. */
  domain: string | undefined;
}

/**
 * Finds the `<` that opens the angle-bracketed part, skipping quoted text so
 * a display name such as `"Smith, <Bob>"` does not count.
 */
function findOpeningBracket(text: string): number {
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (quoted && char === "\\") i += 1;
    else if (char === '"') quoted = !quoted;
    else if (char === "<" && !quoted) return i;
  }
  return -1;
}

/**
 * Parses the argument of VRFY in the forms clients send: `user`,
 * `user@domain`, `<user@domain>` and `Full Name <user@domain>`. A display
 * name is ignored. Quoted local parts are allowed. A trailing dot on the
 * domain is dropped. Returns null when the argument names no address.
 */
export function parseVrfyArgument(argument: string): VrfyTarget | null {
  let text = argument.trim();
  if (text.endsWith(">")) {
    const open = findOpeningBracket(text);
    if (open === -1) return null;
    text = text.slice(open + 1, -1).trim();
  }
  if (text === "" || /[\s<>]/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, '""'))) return null;

  const hasDomain = /@(?=[^"]*$)/.test(text);
  // A bare local part is checked with the same grammar as a full address, so
  // the domain added here is only a placeholder.
  const mailbox = hasDomain ? text.replace(/\.$/, "") : `${text}@placeholder.invalid`;
  const parsed = parseMailbox(mailbox, true);
  if ("error" in parsed) return null;
  return { local: parsed.local, domain: hasDomain ? parsed.domain : undefined };
}
