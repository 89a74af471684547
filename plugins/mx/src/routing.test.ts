import { expect, test } from "vitest";
import { MIN_RETRY_DELAY, optionsSchema, retryDelay } from "./options.js";
import { isLocalAddress, orderByPreference } from "./routing.js";

test("MX order shuffles equal preferences fairly", () => {
  const records = [
    { exchange: "c", priority: 20 },
    { exchange: "a", priority: 10 },
    { exchange: "b", priority: 10 },
    { exchange: "d", priority: 30 },
  ];
  const firsts = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const ordered = orderByPreference(records.map((record) => ({ ...record })));
    expect(ordered.slice(2).map((record) => record.exchange)).toEqual(["c", "d"]);
    const first = ordered[0]!.exchange;
    firsts.set(first, (firsts.get(first) ?? 0) + 1);
  }
  const a = firsts.get("a")!;
  const b = firsts.get("b")!;
  expect(a + b).toBe(2000);
  expect(a / b).toBeGreaterThan(0.8);
  expect(a / b).toBeLessThan(1.25);
});

test("loop guard recognises local addresses", () => {
  for (const address of ["127.0.0.1", "127.8.9.10", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"]) {
    expect(isLocalAddress(address), address).toBe(true);
  }
  for (const address of ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"]) {
    expect(isLocalAddress(address), address).toBe(false);
  }
});

test("retry schedule grows and repeats", () => {
  const options = optionsSchema.parse({});
  const minutes = options.retry.map((ms) => ms / 60_000);
  expect(minutes[0]).toBeGreaterThanOrEqual(1);
  expect(minutes[0]).toBeLessThanOrEqual(10);
  for (let i = 1; i < minutes.length; i++) expect(minutes[i]).toBeGreaterThan(minutes[i - 1]!);
  expect(minutes.filter((value) => value >= 30).length).toBeGreaterThan(0);
  expect(options.maxQueueLifetime).toBe(5 * 24 * 3_600_000);
  expect(retryDelay(options.retry, 1)).toBe(options.retry[0]);
  expect(retryDelay(options.retry, 100)).toBe(options.retry.at(-1));
  expect(optionsSchema.parse({ retry: ["1m", "30m"] }).retry).toEqual([60_000, 1_800_000]);
  expect(optionsSchema.safeParse({ retry: [] }).success).toBe(false);
  expect(optionsSchema.safeParse({ routes: { "a.test": { host: "h", tls: "sometimes" } } }).success).toBe(false);
});

test.each([
  [{ retry: [0] }, "retry.0", 0],
  [{ retry: ["5m", "0s"] }, "retry.1", "0s"],
  [{ retry: ["999ms", "5m"] }, "retry.0", "999ms"],
])("retry delay below one second is an error: %j", (options, optionPath, value) => {
  const result = optionsSchema.safeParse(options);
  expect(result.success).toBe(false);
  const issue = result.error!.issues[0]!;
  expect(issue.path.join(".")).toBe(optionPath);
  expect(issue.message).toBe(`expected a duration of at least 1000 ms, received ${JSON.stringify(value)}`);
});

test("retry delay of one second is accepted", () => {
  expect(MIN_RETRY_DELAY).toBe(1000);
  expect(optionsSchema.parse({ retry: ["1s", 1000] }).retry).toEqual([1000, 1000]);
});

test("retryDelay never returns less than the floor", () => {
  expect(retryDelay([0], 1)).toBe(MIN_RETRY_DELAY);
  expect(retryDelay([5000, 0], 7)).toBe(MIN_RETRY_DELAY);
  expect(retryDelay([5000, 0], 1)).toBe(5000);
  expect(retryDelay([Number.NaN], 1)).toBe(MIN_RETRY_DELAY);
  expect(retryDelay([], 1)).toBe(MIN_RETRY_DELAY);
});

test.each([
  [{ pollInterval: "30d" }, "pollInterval"],
  [{ retry: ["5m", "30d"] }, "retry.1"],
  [{ timeouts: { socket: "25d" } }, "timeouts.socket"],
])("option that a timer would get past its limit is an error: %j", (options, optionPath) => {
  const result = optionsSchema.safeParse(options);
  expect(result.success).toBe(false);
  const issue = result.error!.issues[0]!;
  expect(issue.path.join(".")).toBe(optionPath);
  expect(issue.message).toMatch(/^expected a duration of at most 24\.8 days \(2147483647 ms\)/);
});

test("pollInterval of 0 is an error", () => {
  expect(optionsSchema.safeParse({ pollInterval: 0 }).success).toBe(false);
});

test("maxQueueLifetime may pass the timer limit, up to 365 days", () => {
  expect(optionsSchema.parse({ maxQueueLifetime: "30d" }).maxQueueLifetime).toBe(30 * 86_400_000);
  expect(optionsSchema.safeParse({ maxQueueLifetime: "400d" }).success).toBe(false);
});
