import { pooledRandom } from "@mailroom/core";
import os from "node:os";

let counter = 0;

/** The machine's host name, escaped. It is read once, because a maildir name only needs it to tell machines apart. */
let localHost: string | undefined;

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
  // Pooled, because one randomBytes call per name cost about 10 µs in profiles.
  const random = pooledRandom(8, "hex");
  const host = parts.hostname === undefined ? (localHost ??= escapeHostname(os.hostname())) : escapeHostname(parts.hostname);
  return `${seconds}.M${micros}P${pid}Q${counter}R${random}.${host}`;
}
