// The outbound benchmark: clients hand 1 KB messages for several domains to
// the server, which relays them to a loopback Postfix smtp-sink. The rate runs
// from the first client connection to the last message the sink received.
//
//   node bench/outbound.mjs [--messages 5000] [--domains 20] [--repeats 3]
import { spawn } from "node:child_process";
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { BENCH_DIR, HARAKA_BIN, MAILROOM_BIN, SMTP_SINK, SMTP_SOURCE, postfixEnv } from "./lib/peers.mjs";
import { cpuSeconds, peakRss, processTree, resetPeakRss } from "./lib/proc.mjs";
import { startServer, stopServer, SERVERS } from "./lib/servers.mjs";
import { median } from "./lib/stats.mjs";
import { summarizeProfiles } from "./lib/cpuprofile.mjs";
import { setup } from "./setup.mjs";

const { values: opts } = parseArgs({
  options: {
    messages: { type: "string", default: "5000" },
    domains: { type: "string", default: "20" },
    repeats: { type: "string", default: "3" },
    servers: { type: "string", default: "haraka-outbound,mailroom-outbound" },
    "timeout-s": { type: "string", default: "300" },
    profile: { type: "boolean", default: false },
  },
});
setup();

const SERVER_PORT = 26300;
const SINK_PORT = 26301;

SERVERS["mailroom-outbound"] = {
  label: "Mailroom, relay + mx",
  command: ({ port, workDir, nodeFlags }) => {
    const config = {
      server: { hostname: "out.bench.test", listen: [`127.0.0.1:${port}`], logLevel: "warn", spoolDir: path.join(workDir, "spool") },
      plugins: [
        { use: "@mailroom/plugin-relay", with: { trustedNetworks: ["127.0.0.1"], localDomains: ["bench.test"] } },
        {
          use: "@mailroom/plugin-mx",
          with: {
            queueDir: path.join(workDir, "queue"),
            smarthost: { host: "127.0.0.1", port: SINK_PORT, tls: "none", allowLocal: true },
          },
        },
      ],
    };
    mkdirSync(path.join(workDir, "spool"), { recursive: true });
    const file = path.join(workDir, "mailroom.yaml");
    writeFileSync(file, JSON.stringify(config, null, 2));
    return { file: process.execPath, args: [...nodeFlags, MAILROOM_BIN, "start", "-c", file] };
  },
};
SERVERS["haraka-outbound"] = {
  label: "Haraka, 1 process, outbound",
  command: ({ port, workDir, nodeFlags }) => {
    const dir = path.join(workDir, "haraka");
    cpSync(path.join(BENCH_DIR, "node_modules/Haraka/config"), path.join(dir, "config"), { recursive: true });
    cpSync(path.join(BENCH_DIR, "haraka-outbound"), dir, { recursive: true });
    writeFileSync(path.join(dir, "config/smtp.ini"), `listen=127.0.0.1:${port}\nnodes=0\n`);
    return {
      file: process.execPath,
      args: [...nodeFlags, HARAKA_BIN, "-c", dir],
      env: { ...process.env, BENCH_SINK_PORT: String(SINK_PORT) },
    };
  },
};

/** Starts smtp-sink with its counters on stdout; `count()` is the messages it received. */
function startSink() {
  const args = [...(process.getuid?.() === 0 ? ["-u", "nobody"] : []), "-c", `127.0.0.1:${SINK_PORT}`, "1024"];
  const child = spawn(SMTP_SINK, args, { env: postfixEnv(), stdio: ["ignore", "pipe", "inherit"], detached: true });
  let received = 0;
  let tail = "";
  child.stdout.setEncoding("latin1");
  child.stdout.on("data", (text) => {
    tail = (tail + text).slice(-200);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    if (all.length) received = Number(all.at(-1)[1]);
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return { child, exited, count: () => received };
}

function source(messages, to) {
  return new Promise((resolve, reject) => {
    const args = ["-s", "1", "-l", "1024", "-m", String(messages), "-M", "client.bench.test", "-f", "sender@client.bench.test", "-t", to, `127.0.0.1:${SERVER_PORT}`];
    const child = spawn(SMTP_SOURCE, args, { env: postfixEnv(), stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`smtp-source exit ${code}: ${stderr.trim().slice(0, 300)}`))));
  });
}

async function waitFor(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const messages = Number(opts.messages);
const domains = Number(opts.domains);
const timeoutMs = Number(opts["timeout-s"]) * 1000;
const servers = opts.servers.split(",");
const records = [];
for (let repeat = 0; repeat < Number(opts.repeats); repeat++) {
  for (const name of repeat % 2 ? [...servers].reverse() : servers) {
    const workDir = path.join(BENCH_DIR, "results", `outbound-${name}-${Date.now()}`);
    const sink = startSink();
    const record = { server: name, repeat, messages };
    let server;
    try {
      const nodeFlags = opts.profile ? ["--cpu-prof", `--cpu-prof-dir=${path.join(workDir, "profile")}`] : [];
      server = await startServer(name, { port: SERVER_PORT, workDir, nodeFlags });
      // Warm-up: 100 messages to one domain, all delivered before the clock starts.
      await source(100, "user@warmup.bench.test");
      await waitFor(() => sink.count() >= 100, timeoutMs);
      const base = sink.count();
      const tree = processTree(server.pid);
      resetPeakRss(tree);
      const cpuBefore = cpuSeconds(tree);
      const started = process.hrtime.bigint();
      const perDomain = Math.floor(messages / domains);
      const clients = Array.from({ length: domains }, (_, i) =>
        source(perDomain + (i < messages % domains ? 1 : 0), `user@d${i + 1}.bench.test`),
      );
      await Promise.all(clients);
      record.acceptSeconds = Number(process.hrtime.bigint() - started) / 1e9;
      await waitFor(() => sink.count() >= base + messages, timeoutMs);
      record.seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const after = processTree(server.pid);
      record.rate = messages / record.seconds;
      record.cpuMsPerMessage = ((cpuSeconds(after) - cpuBefore) / messages) * 1000;
      record.peakRss = peakRss(after);
    } catch (error) {
      record.error = error.message;
    } finally {
      if (server) await stopServer(server);
      await stopServer(sink);
    }
    if (opts.profile && !record.error) {
      console.log(`\n${name}:\n\n${summarizeProfiles(path.join(workDir, "profile"), { messages, top: 25 }).join("\n")}`);
    } else if (!record.error) {
      rmSync(workDir, { recursive: true, force: true });
    }
    records.push(record);
    console.log(
      `outbound: [${repeat + 1}] ${name}: ` +
        (record.error
          ? `FAILED: ${record.error}`
          : `${record.rate.toFixed(0)} msgs/s end to end (accepted in ${record.acceptSeconds.toFixed(1)} s, delivered in ${record.seconds.toFixed(1)} s), ${record.cpuMsPerMessage.toFixed(2)} cpu ms/msg, ${(record.peakRss / 2 ** 20).toFixed(1)} MB`),
    );
  }
}

const lines = [
  `| server | msgs/s, first accept to last delivery | vs Haraka | CPU ms per msg | peak RSS MB | runs |`,
  "|---|---:|---:|---:|---:|---:|",
];
for (const name of servers) {
  const ok = records.filter((r) => r.server === name && !r.error);
  const ratios = ok
    .map((r) => r.rate / records.find((h) => h.server === "haraka-outbound" && h.repeat === r.repeat && !h.error)?.rate)
    .filter(Number.isFinite);
  const fmt = (v, d) => (ok.length ? v.toFixed(d) : "-");
  lines.push(
    `| ${SERVERS[name].label} | ${fmt(median(ok.map((r) => r.rate)), 0)} | ${ratios.length ? median(ratios).toFixed(2) : "-"} | ${fmt(median(ok.map((r) => r.cpuMsPerMessage)), 2)} | ${fmt(median(ok.map((r) => r.peakRss)) / 2 ** 20, 1)} | ${ok.length} |`,
  );
}
console.log(`\n${messages} messages of 1 KB for ${domains} domains, ${domains} clients, one connection per message:\n`);
console.log(lines.join("\n"));
