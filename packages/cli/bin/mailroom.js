#!/usr/bin/env node
import { main } from "../dist/cli.js";

// Exit as soon as the command is done: a timer or socket that a plugin left
// behind must not keep a stopped server running.
process.exit(await main(process.argv));
