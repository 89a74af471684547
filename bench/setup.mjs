// Fetches what the benchmark needs, idempotently: Postfix's smtp-source and
// smtp-sink (Debian's postfix package, unpacked, never installed or started)
// and Haraka (npm, into bench/node_modules).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import {
  BENCH_DIR,
  HARAKA_BIN,
  PEERS_DIR,
  POSTFIX_DIR,
  SMTP_SINK,
  SMTP_SOURCE,
  postfixEnv,
} from "./lib/peers.mjs";

function run(command, args, options = {}) {
  console.log(`setup: ${command} ${args.join(" ")}`);
  execFileSync(command, args, { stdio: "inherit", ...options });
}

function findDeb() {
  return readdirSync(PEERS_DIR).find((name) => /^postfix_.*\.deb$/.test(name));
}

export function setup() {
  mkdirSync(PEERS_DIR, { recursive: true });
  if (!existsSync(SMTP_SOURCE) || !existsSync(SMTP_SINK)) {
    if (!findDeb()) {
      try {
        run("apt-get", ["download", "postfix"], { cwd: PEERS_DIR });
      } catch {
        // The package lists may be missing on a fresh machine: fetch them once.
        run("apt-get", ["update"]);
        run("apt-get", ["download", "postfix"], { cwd: PEERS_DIR });
      }
    }
    const deb = findDeb();
    if (!deb) throw new Error("apt-get download postfix left no postfix_*.deb in bench/.peers");
    rmSync(POSTFIX_DIR, { recursive: true, force: true });
    run("dpkg", ["-x", path.join(PEERS_DIR, deb), POSTFIX_DIR]);
  }
  // smtp-source prints its usage and exits 1 without arguments: that proves
  // the binary and its private libraries load.
  try {
    execFileSync(SMTP_SOURCE, [], { env: postfixEnv(), stdio: "pipe" });
  } catch (error) {
    const text = String(error.stderr ?? "");
    if (!text.includes("usage")) throw new Error(`smtp-source does not run: ${text || error.message}`);
  }

  if (!existsSync(HARAKA_BIN)) {
    run("npm", ["ci", "--no-audit", "--no-fund"], { cwd: BENCH_DIR });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  setup();
  console.log("setup: peers ready");
}
