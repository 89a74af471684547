// Type-checks the tests, runs vitest with the given arguments and prints a
// closing "N passed, N failed, N skipped" line from its JSON report. A failed
// type check counts as one failed test.
//
// The type check runs at the same time as vitest, so that a run of one test
// file (`npm test -- FILE`) does not wait for a full tsc before its tests
// start. Such a run still ends no sooner than tsc does, about 8 s on a 2-CPU
// VM. tsc runs at a lower CPU priority so that it slows timed tests less,
// and its output is printed after vitest's, so the two do not interleave.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

/**
 * Runs a command to its end and resolves with its exit code, or 1 when it
 * was killed by a signal or failed to start. `onStart` gets the child process.
 */
function run(command, args, options, onStart) {
  return new Promise((resolve) => {
    const child = spawn(command, args, options);
    child.on("error", (error) => {
      console.error(`${command} failed to start: ${error.message}`);
      resolve(1);
    });
    child.on("close", (code) => resolve(code ?? 1));
    onStart?.(child);
  });
}

// esbuild, which vitest uses, strips types without checking them. tsc is
// started with node directly, so that the lower priority applies to the
// process that does the work.
const tscBin = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const typecheckOutput = [];
const typecheck = run(
  process.execPath,
  [tscBin, "-p", "tsconfig.test.json", "--noEmit"],
  { stdio: ["ignore", "pipe", "pipe"] },
  (child) => {
    child.stdout.on("data", (chunk) => typecheckOutput.push(chunk));
    child.stderr.on("data", (chunk) => typecheckOutput.push(chunk));
    if (child.pid === undefined) return;
    try {
      os.setPriority(child.pid, 10);
    } catch {
      // Without the lower priority the type check only competes more with the tests.
    }
  },
);

const dir = mkdtempSync(path.join(os.tmpdir(), "mailroom-vitest-"));
const report = path.join(dir, "report.json");
const vitest = run(
  "npx",
  ["vitest", "run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`, ...process.argv.slice(2)],
  { stdio: "inherit" },
);

const [typecheckCode, vitestCode] = await Promise.all([typecheck, vitest]);
const typecheckFailed = typecheckCode !== 0;
if (typecheckFailed) {
  process.stdout.write(Buffer.concat(typecheckOutput));
  console.log("type check of the tests failed (tsc -p tsconfig.test.json)");
}

let summary = "0 passed, 1 failed (vitest wrote no report)";
try {
  const results = JSON.parse(readFileSync(report, "utf8"));
  const skipped = results.numPendingTests + results.numTodoTests;
  const failed =
    results.numFailedTests +
    (results.numFailedTestSuites > 0 && results.numFailedTests === 0 ? results.numFailedTestSuites : 0) +
    (typecheckFailed ? 1 : 0);
  summary = `${results.numPassedTests} passed, ${failed} failed, ${skipped} skipped`;
} catch {
  // The summary above says that the report is missing.
}
rmSync(dir, { recursive: true, force: true });
console.log(summary);
process.exit(typecheckFailed ? 1 : vitestCode);
