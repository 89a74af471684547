// The memory checks: RSS with 1000 idle connections, and the RSS growth
// while one 50 MB message goes through.
//
//   node bench/memory.mjs [--servers mailroom-discard,haraka,smtp-server] [--connections 1000]
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import { BENCH_DIR } from "./lib/peers.mjs";
import { peakRss, processTree, resetPeakRss } from "./lib/proc.mjs";
import { startServer, stopServer } from "./lib/servers.mjs";
import { runSource } from "./lib/workloads.mjs";
import { setup } from "./setup.mjs";

const { values: opts } = parseArgs({
  options: {
    servers: { type: "string", default: "smtp-server,haraka,mailroom-discard" },
    connections: { type: "string", default: "1000" },
    "message-mb": { type: "string", default: "50" },
    port: { type: "string", default: "26600" },
  },
});
setup();

const MB = 2 ** 20;
const rss = (pids) =>
  pids.reduce((sum, pid) => {
    try {
      return sum + Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) * 1024;
    } catch {
      return sum;
    }
  }, 0);

/** Opens a connection, reads the greeting, says EHLO and leaves it idle. */
function idleConnection(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    let greeted = false;
    socket.setTimeout(10_000, () => socket.destroy(new Error("timed out")));
    socket.on("data", (chunk) => {
      text += chunk;
      if (!greeted && /^220 /m.test(text)) {
        greeted = true;
        text = "";
        socket.write("EHLO client.bench.test\r\n");
      } else if (greeted && /^250 /m.test(text)) {
        socket.setTimeout(0);
        resolve(socket);
      } else if (/^[45]\d\d /m.test(text)) {
        socket.destroy();
        reject(new Error(`refused: ${text.trim()}`));
      }
    });
    socket.on("error", reject);
  });
}

const limits = { maxConnections: 5000, maxConnectionsPerIp: 5000, maxMessageSize: "200MB" };
const count = Number(opts.connections);
const port = Number(opts.port);
const lines = [];
for (const name of opts.servers.split(",")) {
  const workDir = path.join(BENCH_DIR, "results", `memory-${name}-${Date.now()}`);
  const server = await startServer(name, { port, workDir, limits });
  try {
    await runSource("1k-c20", { port, messages: 200 });
    const tree = processTree(server.pid);
    const before = rss(tree);
    const sockets = [];
    let failed = "";
    try {
      for (let i = 0; i < count; i += 50) {
        const batch = Array.from({ length: Math.min(50, count - i) }, () => idleConnection(port));
        sockets.push(...(await Promise.all(batch)));
      }
    } catch (error) {
      failed = ` (stopped at ${sockets.length}: ${error.message})`;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const withIdle = rss(processTree(server.pid));
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 1000));

    let big = "not run";
    if (name !== "haraka") {
      const start = rss(tree);
      resetPeakRss(tree);
      const seconds = await runSource("1k-seq", { port, messages: 1, size: Number(opts["message-mb"]) * MB }).catch((error) => error);
      big =
        seconds instanceof Error
          ? `failed: ${seconds.message}`
          : `peak ${(peakRss(tree) / MB).toFixed(1)} MB, +${((peakRss(tree) - start) / MB).toFixed(1)} MB over ${(start / MB).toFixed(1)} MB, ${seconds.toFixed(1)} s`;
    }
    lines.push(
      `| ${name} | ${(before / MB).toFixed(1)} | ${(withIdle / MB).toFixed(1)} (+${((withIdle - before) / MB).toFixed(1)}) for ${sockets.length}${failed} | ${big} |`,
    );
  } finally {
    await stopServer(server);
  }
}
const table = [
  `| server | RSS after warm-up, MB | RSS with ${count} idle connections, MB | one ${opts["message-mb"]} MB message |`,
  "|---|---:|---:|---|",
  ...lines,
].join("\n");
console.log(table);
