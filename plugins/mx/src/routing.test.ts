import { pino } from "pino";
import { expect, test } from "vitest";
import { StaticDnsResolver } from "@mailroom/testing";
import { MIN_RETRY_DELAY, optionsSchema, retryDelay } from "./options.js";
import { describeLocalHost, isLocalAddress, orderByPreference, route, type Route } from "./routing.js";

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

test("local route hosts known without DNS", () => {
  const cases: [string, string | undefined][] = [
    ["127.0.0.1", "a loopback address"],
    ["127.0.0.53", "a loopback address"],
    ["::1", "a loopback address"],
    ["0:0:0:0:0:0:0:1", "a loopback address"],
    ["[::1]", "a loopback address"],
    ["[IPv6:::1]", "a loopback address"],
    ["::ffff:127.0.0.1", "a loopback address"],
    ["0.0.0.0", "the unspecified address"],
    ["::", "the unspecified address"],
    ["localhost", "a loopback name"],
    ["LocalHost.", "a loopback name"],
    ["filter.localhost", "a loopback name"],
    ["192.0.2.1", undefined],
    ["2001:db8::1", undefined],
    ["mail.example.net", undefined],
    ["notlocalhost", undefined],
    ["localhost.example.net", undefined],
  ];
  for (const [host, kind] of cases) expect(describeLocalHost(host), host).toBe(kind);
});

test("smarthost on loopback defers, not bounces", async () => {
  const context = { id: "r1", sender: "a@local.test", domain: "far.test", recipients: ["b@far.test"], attempts: 0 };
  const env = (options: Record<string, unknown>) => ({
    options: optionsSchema.parse(options),
    dns: () => new StaticDnsResolver({}),
    hooks: () => undefined,
    logger: pino({ level: "silent" }),
  });
  const smarthost = await route("far.test", context, env({ smarthost: { host: "127.0.0.1", port: 10025 } }));
  expect(smarthost).toMatchObject({ kind: "failure", permanent: false, code: 451, enhanced: "4.4.6" });
  expect(smarthost).toMatchObject({
    message: "smarthost host 127.0.0.1 is this host (127.0.0.1), which the loop guard rejects unless smarthost.allowLocal is true",
  });

  const routed = await route("far.test", context, env({ routes: { "Far.Test": { host: "::1", port: 10025 } } }));
  expect(routed).toMatchObject({ kind: "failure", permanent: false, code: 451, enhanced: "4.4.6" });
  expect(routed).toMatchObject({ message: expect.stringContaining('routes["far.test"].allowLocal') });

  const allowed = await route("far.test", context, env({ smarthost: { host: "127.0.0.1", port: 10025, allowLocal: true } }));
  expect(allowed).toMatchObject({ kind: "hops", hops: [{ name: "127.0.0.1", addresses: ["127.0.0.1"], port: 10025 }] });
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

/**
 * Routes `self.test` with the given MX records. Hosts named self* resolve to
 * loopback, mixed* to loopback and 198.51.100.99, the others to 198.51.100.x.
 */
async function routeWithMx(mx: [number, string][], options: Record<string, unknown> = {}, broken: string[] = []): Promise<{ route: Route; looked: string[] }> {
  const looked: string[] = [];
  const a: Record<string, string[] | "servfail"> = {};
  for (const [index, [, host]] of mx.entries()) {
    if (broken.includes(host)) a[host] = "servfail";
    else if (host.startsWith("mixed")) a[host] = ["198.51.100.99", "127.0.0.1"];
    else a[host] = host.startsWith("self") ? ["127.0.0.1"] : [`198.51.100.${index + 1}`];
  }
  const zone = new StaticDnsResolver({
    mx: { "self.test": mx.map(([priority, exchange]) => ({ priority, exchange })) },
    a,
    aaaa: Object.fromEntries(mx.map(([, host]) => [host, []])),
  });
  const dns = {
    resolveMx: (name: string) => zone.resolveMx(name),
    resolve4: (name: string) => {
      looked.push(name);
      return zone.resolve4(name);
    },
    resolve6: (name: string) => zone.resolve6(name),
    resolvePtr: (name: string) => zone.resolvePtr(name),
  };
  const context = { id: "r1", sender: "a@local.test", domain: "self.test", recipients: ["b@self.test"], attempts: 0 };
  const found = await route("self.test", context, {
    options: optionsSchema.parse(options),
    dns: () => dns,
    hooks: () => undefined,
    logger: pino({ level: "silent" }),
  });
  return { route: found, looked };
}

function hostsOf(found: Route): string[] {
  return found.kind === "hops" ? found.hops.map((hop) => hop.name) : [];
}

test("this host at the best preference is a loop", async () => {
  const { route: found, looked } = await routeWithMx([
    [10, "self.mx.test"],
    [20, "other.mx.test"],
  ]);
  expect(found).toMatchObject({ kind: "failure", permanent: true, code: 554, enhanced: "5.4.6" });
  // The less preferred host is discarded without a lookup.
  expect(looked).toEqual(["self.mx.test"]);
});

test("more preferred hosts than this one are kept", async () => {
  const { route: found } = await routeWithMx([
    [20, "other.mx.test"],
    [5, "better.mx.test"],
    [10, "self.mx.test"],
    [30, "worse.mx.test"],
  ]);
  expect(hostsOf(found)).toEqual(["better.mx.test"]);
});

test("host of equal preference to this one is discarded", async () => {
  for (let run = 0; run < 10; run++) {
    const { route: found } = await routeWithMx([
      [10, "peer.mx.test"],
      [10, "self.mx.test"],
      [20, "other.mx.test"],
    ]);
    expect(found).toMatchObject({ kind: "failure", code: 554, enhanced: "5.4.6" });
  }
});

test("host with one local address counts as this host", async () => {
  const { route: found } = await routeWithMx([
    [10, "mixed.mx.test"],
    [20, "other.mx.test"],
  ]);
  expect(found).toMatchObject({ kind: "failure", code: 554, enhanced: "5.4.6" });
});

test("lookup failure of a more preferred host defers", async () => {
  const { route: found } = await routeWithMx(
    [
      [5, "better.mx.test"],
      [10, "self.mx.test"],
    ],
    {},
    ["better.mx.test"],
  );
  expect(found).toMatchObject({ kind: "failure", permanent: false, code: 451, enhanced: "4.4.3" });
});

test("lookup failure of a discarded host is ignored", async () => {
  const { route: found } = await routeWithMx(
    [
      [10, "self.mx.test"],
      [20, "other.mx.test"],
    ],
    {},
    ["other.mx.test"],
  );
  expect(found).toMatchObject({ kind: "failure", permanent: true, code: 554, enhanced: "5.4.6" });
});

test("allowLocalDestinations keeps every host", async () => {
  const { route: found } = await routeWithMx(
    [
      [10, "self.mx.test"],
      [20, "other.mx.test"],
    ],
    { allowLocalDestinations: true },
  );
  expect(hostsOf(found)).toEqual(["self.mx.test", "other.mx.test"]);
});
