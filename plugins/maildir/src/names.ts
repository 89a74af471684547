/** Lower-cases a local part; mailbox names compare case-insensitively. */
export function normalizeLocal(local: string): string {
  return local.toLowerCase();
}

/**
 * Tells whether a name may be used as one folder of a mailbox path: not
 * empty, not "." or "..", and free of "/", "\" and control characters.
 */
export function isSafeSegment(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !/[/\\\x00-\x1f\x7f]/.test(name);
}
