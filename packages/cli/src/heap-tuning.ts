/**
 * Keeps a server's heap small under load with two V8 flags:
 * - The young generation may grow to 2 MB per semi-space, where V8 would
 *   go on to 16 MB. V8 reads the semi-space maximum only at start-up, so
 *   this watches the scavenges and sets `--semi-space-growth-factor=1`
 *   (no further growth) once the semi-space reached 2 MB.
 * - `--heap-growing-percent=50` lets the old generation grow by half its
 *   live size before the next full collection, where V8 would otherwise
 *   allow up to four times.
 * In the benchmark (docs/benchmarks.md) the two together lowered the peak
 * RSS under the 1 KB load by about 40 MB. They kept the growth for one
 * 50 MB message under 30 MB, for a few percent of throughput. Both must be in place before the other modules load,
 * so bin/mailroom.js imports this first. A heap flag given on the command
 * line or in NODE_OPTIONS turns this off.
 */
import { PerformanceObserver } from "node:perf_hooks";
import v8 from "node:v8";

const MAX_SEMI_SPACE = 2 * 1024 * 1024;

function newSpaceSize(): number {
  return v8.getHeapSpaceStatistics().find((space) => space.space_name === "new_space")?.space_size ?? 0;
}

const flagsGiven = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].join(" ");
// V8 accepts its flags with dashes or underscores.
if (!/--(max|min)[-_]semi[-_]space[-_]size|--semi[-_]space[-_]growth[-_]factor|--heap[-_]growing[-_]percent/.test(flagsGiven)) {
  v8.setFlagsFromString("--heap-growing-percent=50");
  // The new space consists of two semi-spaces.
  const observer = new PerformanceObserver(() => {
    if (newSpaceSize() < 2 * MAX_SEMI_SPACE) return;
    v8.setFlagsFromString("--semi-space-growth-factor=1");
    observer.disconnect();
  });
  observer.observe({ entryTypes: ["gc"] });
}
