import { randomBytes } from "node:crypto";
import os from "node:os";

let counter = 0;

/**
 * Escapes a host name for use in a maildir file name: "/" would split the
 * path and ":" starts the info part that readers parse, so both are written
 * as backslash and three octal digits.
 */
export function escapeHostname(hostname: string): string {
  const name = hostname === "" ? "localhost" : hostname;
  return name.replace(/[/:]/g, (char) => `\\${char.charCodeAt(0).toString(8).padStart(3, "0")}`);
}

/** Inputs of a unique name; each field defaults to a value from the running process. */
export interface NameParts {
  /** Milliseconds since the epoch, with a fraction for microseconds. */
  now?: number;
  pid?: number;
  hostname?: string;
}

/**
 * Returns a file name unique to this delivery, in the maildir convention
 * `seconds.unique.host`. The unique part is the microseconds (M), the
 * process id (P), a per-process counter (Q) and 64 random bits (R), so two
 * processes or two deliveries in one microsecond never share a name.
 */
export function uniqueName(parts: NameParts = {}): string {
  const now = parts.now ?? performance.timeOrigin + performance.now();
  const seconds = Math.floor(now / 1000);
  const micros = Math.floor((now - seconds * 1000) * 1000);
  const pid = parts.pid ?? process.pid;
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  const random = randomBytes(8).toString("hex");
  const host = escapeHostname(parts.hostname ?? os.hostname());
  return `${seconds}.M${micros}P${pid}Q${counter}R${random}.${host}`;
}
