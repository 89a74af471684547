/**
 * Sets two V8 heap flags that keep a server's memory small under load:
 * - `--semi-space-growth-factor=1` keeps the young generation at its
 *   initial 1 MB per semi-space. By default V8 doubles it up to 16 MB,
 *   which added about 25 MB of RSS under the benchmark's 1 KB load.
 * - `--heap-growing-percent=50` lets the old generation grow by half its
 *   live size before the next full collection, where V8 would otherwise
 *   allow up to four times. That cut the peak by about 15 MB more.
 * Neither cost measurable CPU in the benchmark (docs/benchmarks.md). Both
 * must be set before the other modules load, so bin/mailroom.js imports
 * this first. A heap flag given on the command line or in NODE_OPTIONS
 * turns this off.
 */
import v8 from "node:v8";

const flagsGiven = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].join(" ");
if (!/--(max|min)-semi-space-size|--semi-space-growth-factor|--heap-growing-percent/.test(flagsGiven)) {
  v8.setFlagsFromString("--semi-space-growth-factor=1");
  v8.setFlagsFromString("--heap-growing-percent=50");
}
