// Where the unpacked Postfix tools live and how to run them.
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const BENCH_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const REPO_DIR = path.dirname(BENCH_DIR);
export const PEERS_DIR = path.join(BENCH_DIR, ".peers");
export const POSTFIX_DIR = path.join(PEERS_DIR, "postfix");
export const SMTP_SOURCE = path.join(POSTFIX_DIR, "usr/sbin/smtp-source");
export const SMTP_SINK = path.join(POSTFIX_DIR, "usr/sbin/smtp-sink");
export const HARAKA_BIN = path.join(BENCH_DIR, "node_modules/Haraka/bin/haraka");
export const MAILROOM_BIN = path.join(REPO_DIR, "packages/cli/bin/mailroom.js");

/** Environment for the Postfix tools: they load their own shared libraries. */
export function postfixEnv() {
  const lib = path.join(POSTFIX_DIR, "usr/lib/postfix");
  const previous = process.env.LD_LIBRARY_PATH;
  return { ...process.env, LD_LIBRARY_PATH: previous ? `${lib}:${previous}` : lib };
}

export function peersReady() {
  return existsSync(SMTP_SOURCE) && existsSync(SMTP_SINK) && existsSync(HARAKA_BIN);
}
