import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
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
 * Clock ticks per second of the times in /proc/PID/stat (USER_HZ). Node.js
 * cannot call sysconf(_SC_CLK_TCK).
 * NOTE: Linux fixes USER_HZ at 100 on every architecture Node.js runs on;
 * a kernel with another value would shift the start times this file computes.
 */
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * How much earlier than its owner's start an entry must be made to count as
 * left by an earlier process. It covers the 10 ms steps of /proc/uptime and
 * of the start time, coarse file timestamps, and an owner that writes in its
 * first moments.
 */
const START_MARGIN_MS = 1000;

/** Returns the seconds since boot from /proc/uptime, or undefined without /proc. */
function uptimeSeconds(): number | undefined {
  try {
    const seconds = Number.parseFloat(readFileSync("/proc/uptime", "utf8"));
    return Number.isFinite(seconds) ? seconds : undefined;
  } catch {
    return undefined;
  }
}

/** Returns the time of the last boot in ms since the epoch, from /proc/uptime; undefined without /proc. */
export function bootTime(): number | undefined {
  const uptime = uptimeSeconds();
  return uptime === undefined ? undefined : Date.now() - uptime * 1000;
}

/**
 * Returns when the process with this pid started, in ms since the epoch, from
 * field 22 of /proc/PID/stat (clock ticks since boot). Returns undefined when
 * /proc cannot tell: not Linux, no such process, or a process that /proc
 * hides (mounted with hidepid).
 */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The second field is the command name in brackets, which may contain spaces and brackets.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
  const ticks = Number(fields[19]);
  const uptime = uptimeSeconds();
  if (!Number.isFinite(ticks) || uptime === undefined) return undefined;
  return Date.now() - (uptime - ticks / CLOCK_TICKS_PER_SECOND) * 1000;
}

/**
 * Tells whether the process that made an entry, such as a file named with
 * its pid, has ended. kill(pid, 0) alone takes a pid now used by another
 * process (after a reboot or a wrap of the pid counter) for the owner. So on
 * Linux, an entry made before the last boot counts as left by an ended
 * process too, and so does one made before the process that has the pid now
 * started. Use one instance for one scan of a folder: it reads each pid's
 * state once.
 *
 * NOTE: the times compared are wall-clock times, so a forward step of the
 * system clock between an entry's creation and the check can make a running
 * owner's entry look older than the owner. Where /proc is missing (macOS,
 * the BSDs) or hides the process, only kill(pid, 0) and the boot time decide,
 * and an entry whose pid was reused is kept.
 */
export class OwnerCheck {
  private readonly boot = bootTime();
  private readonly alive = new Map<number, boolean>();
  private readonly starts = new Map<number, number | undefined>();

  /** Returns true while some process has this pid. */
  exists(pid: number): boolean {
    let alive = this.alive.get(pid);
    if (alive === undefined) {
      alive = processAlive(pid);
      this.alive.set(pid, alive);
    }
    return alive;
  }

  /**
   * Returns true when the process with this pid that made an entry at
   * `madeAt` (ms since the epoch, for a file its ctime) has ended.
   */
  gone(pid: number, madeAt: number): boolean {
    if (!this.exists(pid)) return true;
    if (this.boot !== undefined && madeAt < this.boot - START_MARGIN_MS) return true;
    if (!this.starts.has(pid)) this.starts.set(pid, processStartTime(pid));
    const started = this.starts.get(pid);
    return started !== undefined && madeAt < started - START_MARGIN_MS;
  }
}

/**
 * Removes the entries of `dir` whose names carry the pid of a process that
 * is gone: `pattern` captures the pid as its first group, and an entry's
 * ctime shows whether the process that now has the pid made it (see
 * OwnerCheck). A kill -9 skips a process's own clean-up, so a starting one
 * removes what it left. An unreadable folder only means nothing is removed.
 */
export function removeLeftovers(dir: string, pattern: RegExp): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  const owners = new OwnerCheck();
  for (const name of names) {
    const match = pattern.exec(name);
    if (!match) continue;
    const pid = Number(match[1]);
    const entry = path.join(dir, name);
    if (owners.exists(pid)) {
      const info = statSync(entry, { throwIfNoEntry: false });
      if (!info || !owners.gone(pid, info.ctimeMs)) continue;
    }
    rmSync(entry, { recursive: true, force: true });
  }
}
