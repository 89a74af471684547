// Summarizes the .cpuprofile files that node --cpu-prof wrote into a folder.
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { REPO_DIR } from "./peers.mjs";

function groupOf(url, functionName) {
  if (url.includes("node_modules/")) return url.replace(/^.*node_modules\/((?:@[^/]+\/)?[^/]+).*$/, "$1");
  if (url.startsWith("node:")) return "node internals";
  if (url.includes(REPO_DIR)) return url.replace(`file://${REPO_DIR}/`, "").split("/").slice(0, 2).join("/");
  return functionName.startsWith("(") ? functionName : "native (fs, sockets, crypto)";
}

/**
 * Returns markdown lines: self time by package and by function of the main
 * thread, in ms and in µs per message. Other threads of the process (module
 * hooks, for one) write profiles of their own; the main thread is the one
 * with the most samples.
 */
export function summarizeProfiles(dir, { messages, top = 30 }) {
  const profiles = readdirSync(dir)
    .filter((name) => name.endsWith(".cpuprofile"))
    .map((name) => JSON.parse(readFileSync(path.join(dir, name), "utf8")))
    .sort((a, b) => b.samples.length - a.samples.length);
  const profile = profiles[0];
  if (!profile) throw new Error(`no .cpuprofile written in ${dir}`);

  // Self time per node: the samples that hit it times the mean sample interval.
  const interval = (profile.endTime - profile.startTime) / profile.samples.length / 1000;
  const hits = new Map();
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  const byFunction = new Map();
  const byGroup = new Map();
  let total = 0;
  for (const node of profile.nodes) {
    const ms = (hits.get(node.id) ?? 0) * interval;
    if (!ms) continue;
    total += ms;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url.replace(`file://${REPO_DIR}/`, "").replace(/^.*node_modules\//, "");
    const key = `${functionName || "(anonymous)"}${where ? ` ${where}:${lineNumber + 1}` : ""}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + ms);
    const group = groupOf(url, functionName);
    byGroup.set(group, (byGroup.get(group) ?? 0) + ms);
  }

  const lines = [`${total.toFixed(0)} ms sampled on the main thread, start-up and shutdown included.`, ""];
  const table = (title, map, count) => {
    lines.push(`| ${title} | self ms | share | µs per msg |`, "|---|---:|---:|---:|");
    for (const [key, ms] of [...map].sort((a, b) => b[1] - a[1]).slice(0, count)) {
      const share = ((ms / total) * 100).toFixed(1);
      lines.push(`| ${key.replace(/\|/g, "\\|")} | ${ms.toFixed(0)} | ${share}% | ${((ms * 1000) / messages).toFixed(0)} |`);
    }
    lines.push("");
  };
  table("package", byGroup, 20);
  table("function", byFunction, top);
  return lines;
}
