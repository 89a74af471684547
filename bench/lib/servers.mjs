// The servers under test: how to configure, start and stop each one.
import { spawn } from "node:child_process";
import { cpSync, mkdirSync, openSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import {
  BENCH_DIR,
  HARAKA_BIN,
  MAILROOM_BIN,
  SMTP_SINK,
  postfixEnv,
} from "./peers.mjs";

export const DOMAIN = "bench.test";

function mailroomConfig({ port, workDir, store, workers = 1, limits }) {
  const spool = path.join(workDir, "spool");
  mkdirSync(spool, { recursive: true });
  const plugins =
    store === "maildir"
      ? [
          { use: "@mailroom/plugin-relay", with: {} },
          { use: "@mailroom/plugin-vrfy", with: {} },
          {
            use: "@mailroom/plugin-maildir",
            with: {
              root: path.join(workDir, "mail"),
              hostname: "bench",
              domains: { [DOMAIN]: { mailboxes: ["user"], catchAll: "user" } },
            },
          },
        ]
      : [
          { use: "@mailroom/plugin-relay", with: { localDomains: [DOMAIN] } },
          { use: "@mailroom/plugin-vrfy", with: {} },
          { use: path.join(BENCH_DIR, "plugins/discard.ts"), with: { domains: [DOMAIN] } },
        ];
  const config = {
    server: {
      hostname: "mx.bench.test",
      listen: [`127.0.0.1:${port}`],
      logLevel: "warn",
      spoolDir: spool,
      ...(workers > 1 ? { workers } : {}),
      ...(limits ? { limits } : {}),
    },
    plugins,
  };
  // JSON is YAML, so no YAML writer is needed here.
  const file = path.join(workDir, "mailroom.yaml");
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

function harakaConfig({ port, workDir, nodes }) {
  const dir = path.join(workDir, "haraka");
  // Haraka's stock config files first, then the bench's own on top.
  cpSync(path.join(BENCH_DIR, "node_modules/Haraka/config"), path.join(dir, "config"), { recursive: true });
  cpSync(path.join(BENCH_DIR, "haraka"), dir, { recursive: true });
  writeFileSync(
    path.join(dir, "config/smtp.ini"),
    `listen=127.0.0.1:${port}\nnodes=${nodes}\ninactivity_timeout=300\n`,
  );
  return dir;
}

/**
 * Each server: `command(port, workDir)` gives what to spawn. `nodeFlags`
 * (for --cpu-prof) are passed to servers that run on node.
 */
export const SERVERS = {
  "smtp-sink": {
    label: "Postfix smtp-sink",
    command: ({ port }) => ({
      file: SMTP_SINK,
      args: [...(process.getuid?.() === 0 ? ["-u", "nobody"] : []), `127.0.0.1:${port}`, "1024"],
      env: postfixEnv(),
    }),
  },
  "smtp-server": {
    label: "bare smtp-server sink",
    command: ({ port, nodeFlags }) => ({
      file: process.execPath,
      args: [...nodeFlags, path.join(BENCH_DIR, "sinks/smtp-server-sink.mjs"), `127.0.0.1:${port}`],
    }),
  },
  "smtp-server-stock": {
    label: "bare smtp-server sink, stock greeting delay",
    command: ({ port, nodeFlags }) => ({
      file: process.execPath,
      args: [...nodeFlags, path.join(BENCH_DIR, "sinks/smtp-server-sink.mjs"), `127.0.0.1:${port}`],
      env: { ...process.env, SINK_STOCK: "1" },
    }),
  },
  haraka: {
    label: "Haraka, 1 process",
    command: ({ port, workDir, nodeFlags }) => ({
      file: process.execPath,
      args: [...nodeFlags, HARAKA_BIN, "-c", harakaConfig({ port, workDir, nodes: 0 })],
      env: { ...process.env, YES_REALLY_DO_DISCARD: "1" },
    }),
  },
  "haraka-2": {
    label: "Haraka, 2 workers",
    command: ({ port, workDir, nodeFlags }) => ({
      file: process.execPath,
      args: [...nodeFlags, HARAKA_BIN, "-c", harakaConfig({ port, workDir, nodes: 2 })],
      env: { ...process.env, YES_REALLY_DO_DISCARD: "1" },
    }),
  },
  "mailroom-discard": {
    label: "Mailroom, discard",
    command: ({ port, workDir, nodeFlags, limits }) => ({
      file: process.execPath,
      args: [...nodeFlags, MAILROOM_BIN, "start", "-c", mailroomConfig({ port, workDir, store: "discard", limits })],
    }),
  },
  "mailroom-discard-2": {
    label: "Mailroom, discard, 2 workers",
    command: ({ port, workDir, nodeFlags }) => ({
      file: process.execPath,
      args: [...nodeFlags, MAILROOM_BIN, "start", "-c", mailroomConfig({ port, workDir, store: "discard", workers: 2 })],
    }),
  },
  "mailroom-maildir": {
    label: "Mailroom, maildir",
    command: ({ port, workDir, nodeFlags }) => ({
      file: process.execPath,
      args: [...nodeFlags, MAILROOM_BIN, "start", "-c", mailroomConfig({ port, workDir, store: "maildir" })],
    }),
  },
};

/** Resolves once a connection to the port reads a 220 greeting. */
function greeting(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    socket.setTimeout(2000, () => socket.destroy(new Error("no greeting")));
    socket.on("data", (chunk) => {
      text += chunk;
      if (/^220[ -]/m.test(text)) {
        socket.end("QUIT\r\n");
        resolve();
      }
    });
    socket.on("error", reject);
  });
}

async function waitReady(port, child, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`exited with code ${child.exitCode} before listening`);
    try {
      await greeting(port);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`not ready after ${timeoutMs} ms: ${error.message}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** Starts a server in its own process group; its output goes to workDir/server.log. */
export async function startServer(name, { port, workDir, nodeFlags = [], limits }) {
  mkdirSync(workDir, { recursive: true });
  const { file, args, env } = SERVERS[name].command({ port, workDir, nodeFlags, limits });
  const log = openSync(path.join(workDir, "server.log"), "a");
  const child = spawn(file, args, {
    cwd: workDir,
    env: env ?? process.env,
    stdio: ["ignore", log, log],
    detached: true,
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    await waitReady(port, child, 30_000);
  } catch (error) {
    await stopServer({ child, exited });
    throw new Error(`${name}: ${error.message} (see ${path.join(workDir, "server.log")})`);
  }
  return { name, pid: child.pid, child, exited };
}

/** SIGTERM, then SIGKILL to the whole process group after a grace period. */
export async function stopServer({ child, exited }) {
  if (child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {}
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
    }, 10_000);
    await exited;
    clearTimeout(timer);
  }
  // Haraka workers may outlive their master for a moment.
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {}
}
