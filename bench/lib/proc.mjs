// Reads CPU time and memory of a server process and all its descendants from /proc.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function stat(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name is in parentheses and may contain spaces: split after it.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(fields[1]), utime: Number(fields[11]), stime: Number(fields[12]) };
  } catch {
    return undefined;
  }
}

/** The pid and every live descendant of it. */
export function processTree(root) {
  const children = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const info = stat(name);
    if (!info) continue;
    const list = children.get(info.ppid) ?? [];
    list.push(Number(name));
    children.set(info.ppid, list);
  }
  const tree = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift();
    tree.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** CPU seconds (user + system) spent so far by the process tree. */
export function cpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    const info = stat(pid);
    if (info) ticks += info.utime + info.stime;
  }
  return ticks / TICKS_PER_SECOND;
}

function status(pid, key) {
  try {
    const match = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(
      readFileSync(`/proc/${pid}/status`, "utf8"),
    );
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Sum of the peak resident set sizes (VmHWM) of the processes, in bytes. */
export function peakRss(pids) {
  return pids.reduce((sum, pid) => sum + status(pid, "VmHWM"), 0);
}

/**
 * Resets VmHWM to the current RSS (writing 5 to clear_refs), so that a peak
 * measured afterwards belongs to the run that follows. Returns false where
 * the kernel refuses it; the peak then includes the warm-up.
 */
export function resetPeakRss(pids) {
  let ok = true;
  for (const pid of pids) {
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, "5");
    } catch {
      ok = false;
    }
  }
  return ok;
}
