// Runs the long forms of the fault and load tests (MAILROOM_SOAK=1) and
// writes docs/reliability.md from the figures each test records.
// Usage: node soak/run.mjs [--out docs/reliability.md]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const outArg = process.argv.indexOf("--out");
const out = path.resolve(root, outArg === -1 ? "docs/reliability.md" : process.argv[outArg + 1]);
const files = [
  "test/fault-kill.test.ts",
  "test/fault-kill-delivering.test.ts",
  "test/fault-full-disk.test.ts",
  "test/fault-queue-disk.test.ts",
  "test/fault-plugins.test.ts",
  "test/fault-remote.test.ts",
  "test/load-connections.test.ts",
  "test/load-abuse.test.ts",
  "test/tls-vanishing.test.ts",
];

/** What the tests check and what they found; kept here so the report is one generated file. */
const ABOUT = `## What the tests do

| test | file | what must hold |
|---|---|---|
| kill -9 while 20 clients send | test/fault-kill.test.ts | The real \`mailroom start\` process (once as one process, once with \`server.workers: 2\`) is killed with SIGKILL at a random moment while 20 clients send messages to two local mailboxes and two remote domains. Every message that got \`250\` is afterwards stored exactly once per recipient, in a maildir (read with Python's \`mailbox.Maildir\`) or in the outbound queue, reconciled by an \`X-Test-Id\` header; every stored file is whole; the restarted server delivers each queued copy to a loopback sink exactly once. With workers, one worker is killed first while the other goes on. |
| kill -9 while delivering | test/fault-kill-delivering.test.ts | As above, but plugin-mx delivers to the sink during the kills: every accepted local copy is in its maildir once, every accepted remote copy reaches the sink at least once, and the copies sent twice (accepted by the sink just before a kill) are counted. |
| spool left by a killed server | test/fault-kill.test.ts | The temporary folder of a killed server is removed when a server starts, and so are the files a killed server left in a configured \`server.spoolDir\` (named after its pid). |
| full disk | test/fault-full-disk.test.ts | A 1 MiB tmpfs under the mailboxes, under the queue, then under \`server.spoolDir\`, is filled with 0 to 56 KiB left free, and messages of up to 2 MiB are sent: each gets \`250\` and is stored whole, or gets \`452 4.3.1\` and leaves no file in \`tmp/\`, \`new/\`, \`active/\` or the spool; the session goes on, and once the filler file is deleted the next message gets \`250\` without a restart. |
| full queue disk mid-delivery | test/fault-queue-disk.test.ts | The queue's disk fills while plugin-mx is in a delivery attempt that the remote defers, so the record's new state cannot be written. Once space is back, the running server delivers it, once. |
| failing plugins | test/fault-plugins.test.ts | A plugin that throws, rejects, never settles, busy-loops 200 ms then hangs or throws, or busy-loops past the hook deadline, at ehlo, rcpt, data_post and queue: \`451 4.3.0\` (\`451\` at EHLO, which RFC 2034 keeps free of enhanced codes) within the deadline, nothing stored, the session usable, and a bystander connection completes its transaction meanwhile. A connect handler that never settles gets \`421 4.3.0\`. test/hook-failures.test.ts covers the mail hook and the reset and disconnect hooks. |
| remote faults | test/fault-remote.test.ts | plugin-mx against a hand-written mail exchanger that resets the connection mid-DATA or stalls after \`354\`, or whose STARTTLS handshake fails, and a dns2 server whose MX answers are truncated, carry the wrong id, answer another question or hold records of another name: the message is deferred (no bounce, nothing sent elsewhere), and once the fault is gone the retry delivers it exactly once. A failed handshake falls back to plaintext only when TLS is not required. A truncated UDP answer whose retry over TCP gets a whole answer is delivered at once. |
| idle and slow connections | test/load-connections.test.ts | Idle connections (50 from each of several loopback addresses, the default per-address limit) and clients sending one byte a second hold the real server; a new client still gets its banner and a NOOP answer; a connection over the per-address limit and those past \`maxConnections\` get \`421\`; \`idleTimeout\` closes the idle ones and the slow ones with \`421 4.4.2\`; server RSS is recorded and must grow by less than 300 MB. |
| abuse | test/load-abuse.test.ts, test/tls-vanishing.test.ts | Connect/close storms (close at once, after the banner, TCP reset, mid-DATA), clients that vanish mid-TLS-handshake on STARTTLS and implicit TLS, and a pipelined burst of NOOPs larger than the socket buffers written while the client does not read: afterwards every reply arrived in order, TLS works, and all connection slots are free again (no leaked count). |

## Faults found and fixed

- A configured \`server.spoolDir\` that did not exist made every message fail with \`451 4.3.0\`: the server now creates it at start.
- A hook handler that blocked the event loop past \`server.hookTimeout\` and then answered was obeyed, because its answer settled before the deadline timer could run: a late answer now counts as a timeout (\`451 4.3.0\`).
- The DNS resolver used answer records of any owner name, so a reply holding records of another name could route mail to a host the domain never named. Only records of the name asked for (or its CNAME chain) count now. A reply holding only others is a temporary failure, so the message is deferred.
- A client sending one byte a second was never closed, since the socket's idle timer restarts at every byte: a command line must now arrive whole within \`idleTimeout\` of its first byte, or the server replies \`421 4.4.2\` and closes.
- A full spool file system (\`server.spoolDir\`) answered \`451 4.3.0\`: it now answers \`452 4.3.1\` like a full mailbox or queue.
- A queue state file whose write failed on a full disk stayed in the queue's \`tmp/\`: it is now removed.
- A queue record whose new state could not be written after a delivery attempt stayed claimed by the running process, so it was not tried again until a restart. Each queue scan now writes it again, and delivery resumes once the disk has space.
- A server killed with SIGKILL left its spool folder in the system temp folder: spool folders are now named after the process, and a starting server removes those of processes that are gone. Spool files in a configured \`server.spoolDir\` carry the pid too and are removed the same way.
- A STARTTLS client that closed its socket in the middle of the TLS handshake held its connection slot until the idle timeout, because the listener keeps half-open sockets and the TLS socket then never closed. The adapter now destroys that socket when it ends before the handshake finished.

## Limits

- A handler that blocks the event loop for longer than the hook deadline delays every connection of that process. Hooks of other connections waiting at that moment may miss their deadline too and answer \`451\`, a temporary failure the client retries. Nothing is lost, but such a plugin must be fixed.
- A message cut by a kill before its \`250\` may be stored for some recipients and not others; the client did not get \`250\` and sends it again, so those recipients may get it twice. Stored copies are never partial.
- SMTP has one reply per message. When recipients go to a maildir and to the outbound queue and one of the two fails (a full disk), the client gets \`452\` and sends the message again. The stock plugins remove the copy they already stored, so the retry does not duplicate it, but a third-party storage plugin that ignores the queue hook's \`accepted\` promise keeps its copy (the server logs "message rejected after some routes stored it").
- A remote that received the whole message and then stalls before its reply gets the message again on the retry (the duplicate that RFC 1047 describes). The stall test's remote drops what it got, so it counts one delivery.
- Delivery is at least once: a server killed after the remote accepted a message but before its queue record was finished sends it again after the restart. The figures of the delivering kill test count such copies.
- When one message goes to several remote domains and the disk fills between writing their records, the records already written are removed again and the client gets \`452\`. A process that delivers its own queue (the default) keeps those records in its own \`claimed/\` folder, so no other worker can pick one up in that moment. With \`deliver: false\` they go to \`active/\`, where another worker's scan can claim one first; it is then delivered, and the client's retry sends a second copy. No test covers this window, which lasts one file write.

`;

const scratch = mkdtempSync(path.join(os.tmpdir(), "mailroom-soak-"));
const figuresFile = path.join(scratch, "figures.jsonl");
const resultsFile = path.join(scratch, "results.json");
writeFileSync(figuresFile, "");

const started = new Date();
const run = spawnSync(
  "npx",
  ["vitest", "run", "--reporter=default", "--reporter=json", `--outputFile.json=${resultsFile}`, ...files],
  {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, MAILROOM_SOAK: "1", MAILROOM_RELIABILITY_OUT: figuresFile },
    // The whole soak is bounded: 30 minutes at most.
    timeout: 30 * 60_000,
  },
);
const seconds = Math.round((Date.now() - started.getTime()) / 1000);

const figures = readFileSync(figuresFile, "utf8")
  .split("\n")
  .filter(Boolean)
  .map((line) => JSON.parse(line));
let results = [];
try {
  const json = JSON.parse(readFileSync(resultsFile, "utf8"));
  results = json.testResults.flatMap((file) =>
    file.assertionResults.map((test) => ({
      file: path.relative(root, file.name),
      name: test.fullName,
      status: test.status,
      ms: Math.round(test.duration ?? 0),
    })),
  );
} catch {
  results = [{ file: "-", name: "vitest wrote no report", status: "failed", ms: 0 }];
}
rmSync(scratch, { recursive: true, force: true });

const passed = results.filter((test) => test.status === "passed").length;
const failed = results.filter((test) => test.status === "failed").length;
const skipped = results.length - passed - failed;
const lost = figures.reduce((sum, entry) => sum + (Number(entry.lost) || 0), 0);
const cell = (text) => String(text ?? "").replace(/\|/g, "\\|").replace(/\n/g, " ");

const lines = [
  "# Reliability report",
  "",
  "Written by `npm run soak`, which runs the long forms of the fault and load",
  "tests (`MAILROOM_SOAK=1`). `npm test` runs the same tests in short forms.",
  "A figure appears below only when its test passed: every test asserts that",
  "each message that got `250` is stored or delivered, so a lost message fails",
  "the test and leaves its row out.",
  "",
  `- Run: ${started.toISOString()}, ${seconds} s, Node ${process.version}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB`,
  `- Tests: ${passed} passed, ${failed} failed, ${skipped} skipped`,
  `- Messages lost: ${failed ? "unknown (a test failed)" : lost}`,
  "- Traffic: only 127.0.0.1, to servers the tests start; every loop is bounded in count and time.",
  "",
  ...ABOUT.split("\n"),
  "## Figures",
  "",
];
for (const entry of figures) {
  lines.push(`### ${entry.test}`, "");
  lines.push("| what | figure |", "|---|---|");
  for (const key of ["load", "faults", "inputs", "delivered", "rss", "lost"]) {
    if (entry[key] !== undefined) lines.push(`| ${key} | ${cell(entry[key])} |`);
  }
  lines.push("");
}
lines.push("## Tests", "", "| test | file | result | time |", "|---|---|---|---|");
for (const test of results) {
  lines.push(`| ${cell(test.name)} | ${test.file} | ${test.status} | ${(test.ms / 1000).toFixed(1)} s |`);
}
lines.push("");
writeFileSync(out, lines.join("\n"));
console.log(`wrote ${path.relative(root, out)}`);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(run.status ?? 1);
