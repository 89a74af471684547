import { readdirSync, rmSync } from "node:fs";
import path from "node:path";

/** Returns true while a process with this pid exists (EPERM means it exists but is not ours). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === "EPERM";
  }
}

/**
 * Removes the entries of `dir` whose names carry the pid of a process that
 * is gone: `pattern` captures the pid as its first group. A kill -9 skips a
 * process's own clean-up, so a starting one removes what it left. An
 * unreadable folder only means nothing is removed.
 */
export function removeLeftovers(dir: string, pattern: RegExp): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const match = pattern.exec(name);
    if (match && !processAlive(Number(match[1]))) rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}
