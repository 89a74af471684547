// Type-checks the tests, runs vitest with the given arguments and prints a
// closing "N passed, N failed, N skipped" line from its JSON report. A failed
// type check counts as one failed test.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

// esbuild, which vitest uses, strips types without checking them.
const typecheck = spawnSync("npx", ["tsc", "-p", "tsconfig.test.json", "--noEmit"], { stdio: "inherit" });
const typecheckFailed = typecheck.status !== 0;
if (typecheckFailed) console.log("type check of the tests failed (tsc -p tsconfig.test.json)");

const dir = mkdtempSync(path.join(os.tmpdir(), "mailroom-vitest-"));
const report = path.join(dir, "report.json");
const vitest = spawnSync(
  "npx",
  ["vitest", "run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`, ...process.argv.slice(2)],
  { stdio: "inherit" },
);

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
process.exit(typecheckFailed ? 1 : (vitest.status ?? 1));
