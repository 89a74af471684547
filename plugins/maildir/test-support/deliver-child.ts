// Delivers messages into a maildir from a separate process, for tests that
// need several writers at once or a writer that dies mid-delivery.
//
//   node --import tsx deliver-child.ts <maildir> <count> <tag> [pause]
//
// Prints "ready", then waits for one line on stdin before it starts, so that several children
// begin together. Message i has the body "<tag> <i>". With "pause" it stops
// before moving the first message into new/ and prints "paused <tmp path>".
import { deliverToMaildir } from "../src/deliver.js";
import { messageFor } from "./messages.js";

const [maildir, countText, tag, mode] = process.argv.slice(2);
const count = Number(countText);
if (!maildir || !Number.isInteger(count) || !tag) {
  process.stderr.write("usage: deliver-child.ts <maildir> <count> <tag> [pause]\n");
  process.exit(2);
}

process.stdout.write("ready\n");
await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));
process.stdin.pause();

const pause = async (tmpPath: string) => {
  process.stdout.write(`paused ${tmpPath}\n`);
  // The timer keeps the process alive; a bare pending promise would let Node
  // exit on its own (code 13) instead of waiting for the test's SIGKILL.
  setInterval(() => undefined, 60_000);
  await new Promise(() => undefined);
};

const names = await Promise.all(
  Array.from({ length: count }, async (_, index) => {
    const delivery = await deliverToMaildir(maildir, messageFor(tag, index), mode === "pause" ? { beforeMove: pause } : {});
    return delivery.name;
  }),
);
process.stdout.write(`${JSON.stringify(names)}\n`);
