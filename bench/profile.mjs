// Profiles a server under one workload with node --cpu-prof and prints the
// functions with the most self time, and the same grouped by package.
//
//   node bench/profile.mjs [--server mailroom-discard] [--workload 1k-c20] [--messages 5000]
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { BENCH_DIR, REPO_DIR } from "./lib/peers.mjs";
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
const seconds = await runSource(opts.workload, { port, messages: Number(opts.messages) });
await stopServer(server);

// One profile per thread (a TypeScript plugin adds tsx's loader thread): the
// main thread is the one with the most samples.
const file = readdirSync(dir)
  .filter((name) => name.endsWith(".cpuprofile"))
  .map((name) => ({ name, size: JSON.parse(readFileSync(path.join(dir, name), "utf8")).samples.length }))
  .sort((a, b) => b.size - a.size)[0]?.name;
if (!file) throw new Error(`no profile written in ${dir}`);
const profile = JSON.parse(readFileSync(path.join(dir, file), "utf8"));

// Self time per node: samples hitting it times the mean sample interval.
const interval = (profile.endTime - profile.startTime) / profile.samples.length / 1000;
const hits = new Map();
for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
const byFunction = new Map();
const byPackage = new Map();
let total = 0;
for (const node of profile.nodes) {
  const ms = (hits.get(node.id) ?? 0) * interval;
  if (!ms) continue;
  total += ms;
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url.replace(`file://${REPO_DIR}/`, "").replace(/^.*node_modules\//, "");
  const key = `${functionName || "(anonymous)"} ${where ? `${where}:${lineNumber + 1}` : ""}`;
  byFunction.set(key, (byFunction.get(key) ?? 0) + ms);
  const group = url.includes("node_modules/")
    ? url.replace(/^.*node_modules\/((?:@[^/]+\/)?[^/]+).*$/, "$1")
    : url.startsWith("node:")
      ? "node internals"
      : url.includes(REPO_DIR)
        ? url.replace(`file://${REPO_DIR}/`, "").split("/").slice(0, 2).join("/")
        : functionName.startsWith("(") ? functionName : "native / other";
  byPackage.set(group, (byPackage.get(group) ?? 0) + ms);
}

const lines = [];
const messages = Number(opts.messages);
lines.push(`${opts.server} under ${opts.workload}: ${messages} messages in ${seconds.toFixed(1)} s (${(messages / seconds).toFixed(0)} msgs/s); ${total.toFixed(0)} ms sampled.`, "");
const table = (title, map, top) => {
  lines.push(`| ${title} | self ms | share | µs per msg |`, "|---|---:|---:|---:|");
  for (const [key, ms] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`| ${key.replace(/\|/g, "\\|")} | ${ms.toFixed(0)} | ${((ms / total) * 100).toFixed(1)}% | ${((ms * 1000) / messages).toFixed(0)} |`);
  }
  lines.push("");
};
table("group", byPackage, 20);
table("function", byFunction, Number(opts.top));
writeFileSync(path.join(dir, "summary.md"), lines.join("\n"));
console.log(lines.join("\n"));
console.log(`profile: ${path.join(dir, file)}`);
