import { expect, test } from "vitest";
import { failureWait, optionsSchema } from "./index.js";

test("failureWait doubles up to maxFailureDelay", () => {
  const options = optionsSchema.parse({ file: "users", failureDelay: "1s", maxFailureDelay: "5s" });
  const waits = [1, 2, 3, 4, 5].map((failures) => failureWait(failures, options, 30_000));
  expect(waits).toEqual([1000, 2000, 4000, 5000, 5000]);
});

test("failureWait stays under half the hook timeout", () => {
  const options = optionsSchema.parse({ file: "users", failureDelay: "4s", maxFailureDelay: "1m" });
  expect(failureWait(3, options, 10_000)).toBe(5000);
});

test("failureWait of zero never waits", () => {
  const options = optionsSchema.parse({ file: "users", failureDelay: 0 });
  expect(failureWait(10, options, 30_000)).toBe(0);
});

test("options have documented defaults", () => {
  expect(optionsSchema.parse({ file: "users" })).toEqual({
    file: "users",
    failureDelay: 1000,
    maxFailureDelay: 10_000,
    maxFailures: 5,
    maxConcurrentChecks: 2,
    maxQueuedChecks: 16,
  });
});

test("failure delays past the timer limit are an error", () => {
  expect(optionsSchema.safeParse({ file: "users", failureDelay: "30d" }).success).toBe(false);
  expect(optionsSchema.safeParse({ file: "users", maxFailureDelay: "30d" }).success).toBe(false);
});
