// Profiles a server under one workload with node --cpu-prof and prints the
// functions with the most self time, and the same grouped by package.
//
//   node bench/profile.mjs [--server mailroom-discard] [--workload 1k-c20] [--messages 5000]
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { summarizeProfiles } from "./lib/cpuprofile.mjs";
import { BENCH_DIR } from "./lib/peers.mjs";
import { startServer, stopServer } from "./lib/servers.mjs";
import { runSource } from "./lib/workloads.mjs";
import { setup } from "./setup.mjs";

const { values: opts } = parseArgs({
  options: {
    server: { type: "string", default: "mailroom-discard" },
    workload: { type: "string", default: "1k-c20" },
    messages: { type: "string", default: "5000" },
    top: { type: "string", default: "30" },
    port: { type: "string", default: "26500" },
  },
});

setup();
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
const dir = path.join(BENCH_DIR, "results", `profile-${opts.server}-${opts.workload}-${stamp}`);
mkdirSync(dir, { recursive: true });
const port = Number(opts.port);
const server = await startServer(opts.server, {
  port,
  workDir: path.join(dir, "work"),
  nodeFlags: ["--cpu-prof", `--cpu-prof-dir=${dir}`],
});
const messages = Number(opts.messages);
const seconds = await runSource(opts.workload, { port, messages });
await stopServer(server);

const lines = [
  `${opts.server} under ${opts.workload}: ${messages} messages in ${seconds.toFixed(1)} s (${(messages / seconds).toFixed(0)} msgs/s).`,
  "",
  ...summarizeProfiles(dir, { messages, top: Number(opts.top) }),
];
writeFileSync(path.join(dir, "summary.md"), lines.join("\n"));
console.log(lines.join("\n"));
console.log(`profiles in ${dir}`);
