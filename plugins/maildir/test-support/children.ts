import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(new URL("./deliver-child.ts", import.meta.url));

/** A delivering child process and the lines it printed. */
export interface Child {
  process: ChildProcess;
  /** Resolves with the first printed line that starts with `prefix`. */
  line(prefix: string, timeout?: number): Promise<string>;
  /** Resolves with the exit code (or the signal name) and stderr. */
  exited: Promise<{ code: number | string; stderr: string }>;
}

/** Starts `deliver-child.ts` under tsx; it prints "ready" and waits for "go" on stdin. */
export function startChild(args: string[]): Child {
  const child = spawn(process.execPath, ["--import", "tsx", SCRIPT, ...args], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let buffer = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (chunk: string) => {
    buffer += chunk;
    let index: number;
    while ((index = buffer.indexOf("\n")) !== -1) {
      lines.push(buffer.slice(0, index));
      buffer = buffer.slice(index + 1);
    }
    for (const waiter of waiters.splice(0)) waiter();
  });
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | string; stderr: string }>((resolve) => {
    child.once("exit", (code, signal) => {
      resolve({ code: code ?? signal ?? "unknown", stderr });
      for (const waiter of waiters.splice(0)) waiter();
    });
  });

  async function line(prefix: string, timeout = 20_000): Promise<string> {
    const deadline = Date.now() + timeout;
    for (;;) {
      const found = lines.find((text) => text.startsWith(prefix));
      if (found !== undefined) return found;
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`child exited before printing "${prefix}": ${stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`child printed no "${prefix}" within ${timeout} ms: ${stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
  return { process: child, line, exited };
}
