// The load benchmark: starts each server on loopback, drives it with
// Postfix's smtp-source and records rate, CPU and peak memory. Servers are
// interleaved and each run gets a fresh server process.
//
//   node bench/run.mjs [--repeats 5] [--scale 1] [--servers a,b] [--workloads a,b]
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { BENCH_DIR, MAILROOM_BIN } from "./lib/peers.mjs";
import { cpuSeconds, peakRss, processTree, resetPeakRss } from "./lib/proc.mjs";
import { SERVERS, startServer, stopServer } from "./lib/servers.mjs";
import { machine, machineTicks, markdown, median, summarize } from "./lib/stats.mjs";
import { WORKLOADS, runSource } from "./lib/workloads.mjs";
import { setup } from "./setup.mjs";

const { values: opts } = parseArgs({
  options: {
    repeats: { type: "string", default: "5" },
    scale: { type: "string", default: "1" },
    warmup: { type: "string", default: "200" },
    servers: { type: "string", default: Object.keys(SERVERS).filter((name) => name !== "smtp-server-stock").join(",") },
    workloads: { type: "string", default: Object.keys(WORKLOADS).join(",") },
    baseline: { type: "string", default: "haraka" },
    "base-port": { type: "string", default: "26000" },
    out: { type: "string", default: path.join(BENCH_DIR, "results") },
  },
});

const servers = opts.servers.split(",").filter(Boolean);
const workloads = opts.workloads.split(",").filter(Boolean);
for (const name of servers) if (!SERVERS[name]) throw new Error(`unknown server ${name}; known: ${Object.keys(SERVERS).join(", ")}`);
for (const name of workloads) if (!WORKLOADS[name]) throw new Error(`unknown workload ${name}; known: ${Object.keys(WORKLOADS).join(", ")}`);
const repeats = Number(opts.repeats);
const scale = Number(opts.scale);
const warmup = Number(opts.warmup);

setup();
if (!existsSync(path.join(path.dirname(MAILROOM_BIN), "../dist/cli.js"))) {
  throw new Error("Mailroom is not built: run `npm run build` at the repository root first");
}

const stamp = new Date().toISOString().replace(/[:.]/g, "-");
const runDir = path.join(opts.out, stamp);
mkdirSync(runDir, { recursive: true });
const info = { ...machine(), started: new Date().toISOString(), loadBefore: readFileSync("/proc/loadavg", "utf8").trim(), repeats, scale, warmup };
console.log(`bench: ${info.nproc} cpu (${info.model}), node ${info.node}; results in ${runDir}`);

function countFiles(dir) {
  if (!existsSync(dir)) return 0;
  let count = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) count += countFiles(full);
    else if (path.basename(dir) === "new") count += 1;
  }
  return count;
}

async function measure(server, workload, repeat, port) {
  const workDir = path.join(runDir, "work", `${server}-${workload}-${repeat}`);
  const messages = Math.max(20, Math.round(WORKLOADS[workload].messages * scale));
  const record = { server, workload, repeat, messages };
  const running = await startServer(server, { port, workDir });
  try {
    if (warmup > 0) await runSource(workload, { port, messages: warmup });
    const tree = processTree(running.pid);
    record.peakResetWorked = resetPeakRss(tree);
    const cpuBefore = cpuSeconds(tree);
    const ticksBefore = machineTicks(readFileSync);
    const seconds = await runSource(workload, { port, messages });
    const after = processTree(running.pid);
    const ticksAfter = machineTicks(readFileSync);
    record.seconds = seconds;
    record.rate = messages / seconds;
    record.cpuPer1000 = ((cpuSeconds(after) - cpuBefore) / messages) * 1000;
    record.peakRss = peakRss(after);
    record.processes = after.length;
    record.machineBusy = (ticksAfter.busy - ticksBefore.busy) / (ticksAfter.total - ticksBefore.total);
    if (server === "mailroom-maildir") {
      const stored = countFiles(path.join(workDir, "mail"));
      if (stored !== messages + warmup) throw new Error(`maildir contains ${stored} messages, expected ${messages + warmup}`);
    }
  } catch (error) {
    record.error = error.message;
  } finally {
    await stopServer(running);
  }
  if (!record.error) finishedWorkDirs.push(workDir);
  return record;
}

// The work folders of successful runs are removed after the last run, not
// between runs. On a file system mounted with `discard`, as this VM's ext4
// is, deleting a maildir run's thousands of files made the next runs that
// sync files about 40% slower, with three times the system CPU time.
const finishedWorkDirs = [];

const records = [];
const basePort = Number(opts["base-port"]);
for (let repeat = 0; repeat < repeats; repeat++) {
  for (const workload of workloads) {
    // Rotate the order each repeat so that no server always runs first.
    const order = servers.map((_, i) => servers[(i + repeat) % servers.length]);
    for (const server of order) {
      const port = basePort + servers.indexOf(server);
      let record;
      try {
        record = await measure(server, workload, repeat, port);
      } catch (error) {
        record = { server, workload, repeat, error: error.message };
      }
      records.push(record);
      const text = record.error
        ? `FAILED: ${record.error}`
        : `${record.rate.toFixed(0)} msgs/s, ${record.cpuPer1000.toFixed(2)} cpu s/1000, ${(record.peakRss / 2 ** 20).toFixed(1)} MB, machine ${(record.machineBusy * 100).toFixed(0)}% busy`;
      console.log(`bench: [${repeat + 1}/${repeats}] ${workload} ${server}: ${text}`);
      writeFileSync(path.join(runDir, "records.json"), JSON.stringify({ info, records }, null, 2));
    }
  }
}

info.finished = new Date().toISOString();
info.loadAfter = readFileSync("/proc/loadavg", "utf8").trim();
const rows = summarize(records, opts.baseline);
const labels = Object.fromEntries(Object.entries(SERVERS).map(([k, v]) => [k, v.label]));
const table = markdown(rows, {
  workloads: workloads.map((w) => [w, WORKLOADS[w].label]),
  servers,
  labels,
  baselineLabel: SERVERS[opts.baseline]?.label ?? opts.baseline,
});
const busy = median(records.filter((r) => !r.error).map((r) => r.machineBusy));
const header = [
  `Run ${info.started} to ${info.finished}: ${info.nproc} CPUs (${info.model}), node ${info.node}, Linux ${info.kernel}.`,
  `${repeats} repeats, message counts x${scale}, ${warmup} warm-up messages per run.`,
  `Load average before: ${info.loadBefore}; after: ${info.loadAfter}. Median machine busy share during runs: ${(busy * 100).toFixed(0)}% of all cores.`,
  "",
];
writeFileSync(path.join(runDir, "records.json"), JSON.stringify({ info, records, rows }, null, 2));
writeFileSync(path.join(runDir, "summary.md"), header.join("\n") + "\n" + table);
for (const dir of finishedWorkDirs) rmSync(dir, { recursive: true, force: true });
// The folders of failed runs stay for inspection, so the parent goes only when none is left.
const workRoot = path.join(runDir, "work");
if (existsSync(workRoot) && readdirSync(workRoot).length === 0) rmdirSync(workRoot);
console.log("\n" + header.join("\n") + "\n" + table);
if (records.some((r) => r.error)) process.exitCode = 1;
