import { expect, test } from "vitest";
import { findListedDomain, systemClock, type UserDirectory } from "./tokens.js";

test("systemClock sleep ends when the signal aborts", async () => {
  const controller = new AbortController();
  const started = performance.now();
  const sleeping = systemClock.sleep(5000, controller.signal);
  setTimeout(() => controller.abort(), 20);
  await sleeping;
  expect(performance.now() - started).toBeLessThan(1000);
});

test("systemClock sleep with an aborted signal returns at once", async () => {
  const controller = new AbortController();
  controller.abort();
  const started = performance.now();
  await systemClock.sleep(5000, controller.signal);
  expect(performance.now() - started).toBeLessThan(1000);
});

test("systemClock sleep past the timer limit does not end early", async () => {
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on("warning", onWarning);
  try {
    const controller = new AbortController();
    let ended = false;
    const sleeping = systemClock.sleep(30 * 86_400_000, controller.signal).then(() => (ended = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(ended).toBe(false);
    controller.abort();
    await sleeping;
    expect(warnings.filter((warning) => warning.name === "TimeoutOverflowWarning")).toEqual([]);
  } finally {
    process.off("warning", onWarning);
  }
});

function directoryOf(domains: () => string[] | Promise<string[]>): UserDirectory {
  return { domains, lookup: () => null, findLocalPart: () => [] };
}

test("findListedDomain returns the directory's spelling", () => {
  const directory = directoryOf(() => ["local.test", "Bücher.Example."]);
  expect(findListedDomain(directory, "xn--bcher-kva.example")).toBe("Bücher.Example.");
  expect(findListedDomain(directory, "local.test")).toBe("local.test");
  expect(findListedDomain(directory, "far.test")).toBeUndefined();
});

test("findListedDomain awaits an asynchronous directory", async () => {
  const directory = directoryOf(async () => ["xn--bcher-kva.example"]);
  const found = findListedDomain(directory, "xn--bcher-kva.example");
  expect(found).toBeInstanceOf(Promise);
  expect(await found).toBe("xn--bcher-kva.example");
  expect(await findListedDomain(directory, "far.test")).toBeUndefined();
});
