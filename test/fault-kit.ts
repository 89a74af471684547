// Shared pieces of the fault and load tests: the real `mailroom start`
// process, a loopback sink that plays a remote mail exchanger, a tmpfs, an
// independent maildir reader, and the figures that `npm run soak` reports.
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFileSync, closeSync, openSync, readFileSync, writeSync } from "node:fs";
import type net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SMTPServer } from "smtp-server";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const BIN = path.join(ROOT, "packages/cli/bin/mailroom.js");

/** True when `npm run soak` runs the long forms. */
export const SOAK = process.env.MAILROOM_SOAK === "1";

/** Picks the short or the long figure of a test. */
export function scale<T>(short: T, long: T): T {
  return SOAK ? long : short;
}

/** Adds one line of figures for the reliability report (only under `npm run soak`). */
export function report(test: string, figures: Record<string, unknown>): void {
  const file = process.env.MAILROOM_RELIABILITY_OUT;
  if (!file) return;
  appendFileSync(file, `${JSON.stringify({ test, ...figures })}\n`);
}

export interface CliServer {
  child: ChildProcess;
  port: number;
  logs(): string;
  exited: Promise<number | null>;
}

/** Runs `mailroom start --config FILE` with the CLI script `bin` and resolves once it logged "listening". */
export function startCli(file: string, timeout = 20_000, cwd = path.dirname(file), bin = BIN): Promise<CliServer> {
  const child = spawn(process.execPath, [bin, "start", "--config", file], {
    cwd,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.stderr!.on("data", (chunk) => (output += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`server did not start:\n${output}`));
    }, timeout);
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk;
      const line = output.split("\n").find((text) => text.includes('"msg":"listening"'));
      if (line && timer) {
        clearTimeout(timer);
        resolve({ child, port: JSON.parse(line).port, logs: () => output, exited });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });
}

/** Sends SIGKILL and waits until the process is gone. */
export async function killHard(server: CliServer): Promise<void> {
  if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
  await server.exited;
}

/** Resident set size of a process in bytes, read from /proc. */
export function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return match ? Number(match[1]) * 1024 : 0;
}

/** Mounts a tmpfs of `size` (for example "1m") on `dir`; returns a reason when it cannot. */
export function mountTmpfs(dir: string, size: string): string | undefined {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { stdio: "pipe" });
    return undefined;
  } catch (error) {
    return `cannot mount a tmpfs here (${(error as Error).message.split("\n")[0]}); this test needs root`;
  }
}

/** Writes a file until the file system is full; returns its size. Bounded by the chunk count. */
export function fill(file: string): number {
  const chunk = Buffer.alloc(16 * 1024, 0x66);
  const fd = openSync(file, "w");
  let written = 0;
  try {
    for (let index = 0; index < 10_000; index++) {
      try {
        written += writeSync(fd, chunk);
      } catch (error) {
        if ((error as { code?: string }).code === "ENOSPC") break;
        throw error;
      }
    }
    // Small writes take the last partial chunk of space too.
    for (let index = 0; index < 64; index++) {
      try {
        written += writeSync(fd, chunk.subarray(0, 256));
      } catch {
        break;
      }
    }
  } finally {
    closeSync(fd);
  }
  return written;
}

export function unmount(dir: string): void {
  spawnSync("umount", ["-l", dir], { stdio: "ignore" });
}

/** One message as Python's mailbox.Maildir reads it. */
export interface MaildirEntry {
  key: string;
  testId: string | null;
  deliveredTo: string | null;
  /** The last line of the body: the clients end every message with "END <id>". */
  lastLine: string;
}

/** Reads every message of a maildir with Python's mailbox module. */
export function readMaildir(folder: string): MaildirEntry[] {
  const script = `
import json, mailbox, sys
box = mailbox.Maildir(sys.argv[1], create=False)
out = []
for key in sorted(box.keys()):
    message = box[key]
    raw = box.get_bytes(key).decode("latin-1").rstrip("\\r\\n")
    out.append({"key": key, "testId": message["X-Test-Id"], "deliveredTo": message["Delivered-To"],
                "lastLine": raw.split("\\r\\n")[-1]})
print(json.dumps(out))
`;
  const result = spawnSync("python3", ["-c", script, folder], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (result.status !== 0) throw new Error(`python3 failed on ${folder}: ${result.stderr}`);
  return JSON.parse(result.stdout) as MaildirEntry[];
}

/** Reads a header's value from raw message text. */
export function header(text: string, name: string): string | undefined {
  const head = text.split(/\r?\n\r?\n/, 1)[0] ?? "";
  const match = new RegExp(`^${name}:[ \\t]*(.*)$`, "im").exec(head);
  return match?.[1]?.trim();
}

/** A message the sink received. */
export interface SinkMessage {
  to: string[];
  testId: string | undefined;
  data: string;
}

export interface Sink {
  port: number;
  received: SinkMessage[];
  close(): Promise<void>;
}

/** Starts a real SMTP server on 127.0.0.1 that plays the remote mail exchanger. */
export async function startSink(): Promise<Sink> {
  const sink: Sink = { port: 0, received: [], close: async () => undefined };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        const data = Buffer.concat(chunks).toString("latin1");
        sink.received.push({
          to: session.envelope.rcptTo.map((item) => item.address),
          testId: header(data, "X-Test-Id"),
          data,
        });
        callback();
      });
    },
  });
  server.on("error", () => undefined);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  sink.port = (server.server.address() as net.AddressInfo).port;
  sink.close = () => new Promise((resolve) => server.close(() => resolve()));
  return sink;
}

/** Waits until `check` is truthy; bounded in time. */
export async function until<T>(
  check: () => T | Promise<T>,
  what: string,
  timeout = 15_000,
): Promise<Exclude<T, undefined | null | false | 0 | "">> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value as Exclude<T, undefined | null | false | 0 | "">;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
