#!/usr/bin/env node
// V8's flags must be set before the CLI's modules load and allocate, so the
// CLI is imported dynamically after this one.
import "../dist/heap-tuning.js";

const { main } = await import("../dist/cli.js");

// Exit as soon as the command is done: a timer or socket that a plugin left
// behind must not keep a stopped server running.
process.exit(await main(process.argv));
