// The four workloads and how smtp-source produces each one.
import { spawn } from "node:child_process";
import { SMTP_SOURCE, postfixEnv } from "./peers.mjs";
import { DOMAIN } from "./servers.mjs";

export const WORKLOADS = {
  "1k-c20": {
    label: "1 KB, 20 clients, one connection per message",
    args: ["-s", "20", "-l", "1024"],
    messages: 3_000,
  },
  "100k-c20": {
    label: "100 KB, 20 clients, one connection per message",
    args: ["-s", "20", "-l", "102400"],
    messages: 1_000,
  },
  "1k-seq": {
    label: "1 KB, 1 client, one connection per message",
    args: ["-s", "1", "-l", "1024"],
    messages: 1_500,
  },
  "1k-c20-reuse": {
    label: "1 KB, 20 clients reusing their connection",
    args: ["-s", "20", "-l", "1024", "-d"],
    messages: 6_000,
  },
};

/**
 * Runs smtp-source against the port and resolves with the wall time in
 * seconds. smtp-source exits non-zero when the server answers anything but
 * the expected positive reply, so a resolved run delivered every message.
 */
export function runSource(workload, { port, messages, size, timeoutMs = 300_000 }) {
  const base = WORKLOADS[workload].args;
  const args = [
    ...(size === undefined ? base : [...base.slice(0, base.indexOf("-l")), "-l", String(size), ...base.slice(base.indexOf("-l") + 2)]),
    "-m",
    String(messages),
    "-M",
    "client.bench.test",
    "-f",
    "sender@client.bench.test",
    "-t",
    `user@${DOMAIN}`,
    `127.0.0.1:${port}`,
  ];
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(SMTP_SOURCE, args, { env: postfixEnv(), stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code === 0) resolve(seconds);
      else reject(new Error(`smtp-source ${signal ?? `exit ${code}`}: ${stderr.trim().slice(0, 500)}`));
    });
  });
}
