import { expect, test } from "vitest";
import { RestartBackoff } from "./workers.js";

test("restart delay doubles up to 30 s", () => {
  const backoff = new RestartBackoff();
  const delays = Array.from({ length: 8 }, () => backoff.next(100));
  expect(delays).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
});

test("restart delay resets after a stable worker", () => {
  const backoff = new RestartBackoff();
  for (let index = 0; index < 4; index++) backoff.next(100);
  expect(backoff.next(59_999)).toBe(16_000);
  expect(backoff.next(60_000)).toBe(1000);
  expect(backoff.next(100)).toBe(2000);
});
