// Medians, spreads and the markdown tables of a benchmark run.
import { execFileSync } from "node:child_process";
import { cpus, release } from "node:os";

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Busy and total jiffies of all cores, from the first line of /proc/stat. */
export function machineTicks(readFile) {
  const fields = readFile("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

export function machine() {
  let model = cpus()[0]?.model ?? "unknown";
  try {
    const lscpu = execFileSync("lscpu", [], { encoding: "utf8" });
    model = /^Model name:\s*(.+)$/m.exec(lscpu)?.[1] ?? model;
  } catch {}
  let nproc = String(cpus().length);
  try {
    nproc = execFileSync("nproc", [], { encoding: "utf8" }).trim();
  } catch {}
  return { nproc, model, node: process.version, kernel: release() };
}

const fmt = (value, digits = 0) =>
  Number.isFinite(value) ? value.toFixed(digits) : "-";

/** Summaries per workload and server; ratios are medians of per-repeat ratios to the baseline. */
export function summarize(records, baseline) {
  const groups = new Map();
  for (const record of records) {
    const key = `${record.workload}\u0000${record.server}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(record);
  }
  const find = (workload, server, repeat) =>
    records.find((r) => r.workload === workload && r.server === server && r.repeat === repeat);
  const rows = [];
  for (const list of groups.values()) {
    const { workload, server } = list[0];
    const ok = list.filter((r) => !r.error);
    const ratio = (field, invert = false) => {
      const values = ok
        .map((r) => {
          const base = find(workload, baseline, r.repeat);
          if (!base || base.error) return undefined;
          return invert ? r[field] / base[field] : r[field] / base[field];
        })
        .filter((v) => v !== undefined && Number.isFinite(v));
      return values.length ? median(values) : NaN;
    };
    const rates = ok.map((r) => r.rate);
    rows.push({
      workload,
      server,
      runs: ok.length,
      errors: list.length - ok.length,
      rate: rates.length ? median(rates) : NaN,
      rateMin: rates.length ? Math.min(...rates) : NaN,
      rateMax: rates.length ? Math.max(...rates) : NaN,
      rateRatio: ratio("rate"),
      cpu: ok.length ? median(ok.map((r) => r.cpuPer1000)) : NaN,
      cpuRatio: ratio("cpuPer1000"),
      rss: ok.length ? median(ok.map((r) => r.peakRss)) : NaN,
      rssRatio: ratio("peakRss"),
      busy: ok.length ? median(ok.map((r) => r.machineBusy)) : NaN,
    });
  }
  return rows;
}

export function markdown(rows, { workloads, servers, labels, baselineLabel }) {
  const lines = [];
  for (const [workload, workloadLabel] of workloads) {
    lines.push(`### ${workloadLabel} (\`${workload}\`)`, "");
    lines.push(
      `| server | msgs/s median (min-max) | vs ${baselineLabel} | CPU s per 1000 msgs | vs ${baselineLabel} | peak RSS MB | vs ${baselineLabel} | runs |`,
      "|---|---:|---:|---:|---:|---:|---:|---:|",
    );
    for (const server of servers) {
      const row = rows.find((r) => r.workload === workload && r.server === server);
      if (!row) continue;
      lines.push(
        `| ${labels[server]} | ${fmt(row.rate)} (${fmt(row.rateMin)}-${fmt(row.rateMax)}) | ${fmt(row.rateRatio, 2)} | ${fmt(row.cpu, 2)} | ${fmt(row.cpuRatio, 2)} | ${fmt(row.rss / 2 ** 20, 1)} | ${fmt(row.rssRatio, 2)} | ${row.runs}${row.errors ? ` (${row.errors} failed)` : ""} |`,
      );
    }
    lines.push("");
  }
  return lines.join("\n");
}
