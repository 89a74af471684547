// Runs vitest with the given arguments and prints a closing
// "N passed, N failed, N skipped" line from its JSON report.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

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
  const failed = results.numFailedTests + (results.numFailedTestSuites > 0 && results.numFailedTests === 0 ? results.numFailedTestSuites : 0);
  summary = `${results.numPassedTests} passed, ${failed} failed, ${skipped} skipped`;
} catch {
  // The summary above says that the report is missing.
}
rmSync(dir, { recursive: true, force: true });
console.log(summary);
process.exit(vitest.status ?? 1);
