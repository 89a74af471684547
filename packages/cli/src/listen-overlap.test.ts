import { parseConfig } from "@mailroom/core";
import { describe, expect, test } from "vitest";
import { findListenOptionProblems, findMetricsClashes } from "./listen-overlap.js";

test("distinct --listen values pass", () => {
  expect(findListenOptionProblems(["127.0.0.1:2525", "127.0.0.1:2526", "127.0.0.1:0", "127.0.0.1:0"], "linux")).toEqual([]);
});

test("repeated --listen value is reported once", () => {
  expect(findListenOptionProblems(["0.0.0.0:25", "0.0.0.0:25"], "linux")).toEqual([
    "--listen 0.0.0.0:25 is given twice; the second listener would fail with EADDRINUSE, so give each address once",
  ]);
});

test("other spelling of an address is a repeat", () => {
  expect(findListenOptionProblems(["[::1]:25", "[0:0::1]:25"], "darwin")).toEqual([
    "--listen [0:0::1]:25 is the same address as --listen [::1]:25; the second listener would fail with EADDRINUSE, so give each address once",
  ]);
});

test("wildcard overlap is checked on Linux only", () => {
  const addresses = ["127.0.0.1:25", "0.0.0.0:25"];
  expect(findListenOptionProblems(addresses, "darwin")).toEqual([]);
  expect(findListenOptionProblems(addresses, "linux")).toEqual([
    "--listen 0.0.0.0:25 overlaps --listen 127.0.0.1:25, because on Linux 0.0.0.0:25 takes port 25 on every address; " +
      "the second listener would fail with EADDRINUSE, so list 0.0.0.0:25 alone, or only specific addresses",
  ]);
});

describe("findMetricsClashes", () => {
  const load = (listen: string, metrics: string, workers = 1) =>
    parseConfig(`server:\n  listen: ${listen}\n  workers: ${workers}\n  metrics: { listen: "${metrics}" }\n`, "m.yaml");
  const ending = "; start would fail with EADDRINUSE, so give the metrics server a port that no listener uses";

  test("same address as a listener", () => {
    expect(findMetricsClashes(load('["127.0.0.1:2525", "127.0.0.1:2526"]', "127.0.0.1:2526"), undefined, "darwin")).toEqual([
      `m.yaml:4: server.metrics.listen: 127.0.0.1:2526 is also the address of the SMTP listener listen[1] 127.0.0.1:2526${ending}`,
    ]);
  });

  test("other spelling of a listener's address", () => {
    expect(findMetricsClashes(load('["[::1]:2525"]', "[0:0::1]:2525"), undefined, "darwin")).toEqual([
      `m.yaml:4: server.metrics.listen: [0:0::1]:2525 is also the address of the SMTP listener listen[0] [::1]:2525${ending}`,
    ]);
  });

  test("wildcard overlap on Linux only", () => {
    const loaded = load('["0.0.0.0:2525"]', "127.0.0.1:2525");
    expect(findMetricsClashes(loaded, undefined, "darwin")).toEqual([]);
    expect(findMetricsClashes(loaded, undefined, "linux")).toEqual([
      "m.yaml:4: server.metrics.listen: 127.0.0.1:2525 overlaps the SMTP listener listen[0] 0.0.0.0:2525, " +
        `because on Linux 0.0.0.0:2525 takes port 2525 on every address${ending}`,
    ]);
  });

  test("a later worker's metrics port", () => {
    expect(findMetricsClashes(load('["127.0.0.1:9465"]', "127.0.0.1:9464", 3), undefined, "linux")).toEqual([
      "m.yaml:4: server.metrics.listen: the worker in slot 2 serves metrics on 127.0.0.1:9465 (the port of server.metrics.listen + 1), " +
        `which is also the address of the SMTP listener listen[0] 127.0.0.1:9465${ending}`,
    ]);
  });

  test("--listen replaces server.listen", () => {
    const loaded = load('["127.0.0.1:2525"]', "127.0.0.1:2525");
    expect(findMetricsClashes(loaded, ["127.0.0.1:2526"], "linux")).toEqual([]);
    expect(findMetricsClashes(loaded, ["127.0.0.1:9000", "127.0.0.1:2525"], "linux")).toEqual([
      `m.yaml:4: server.metrics.listen: 127.0.0.1:2525 is also the address of the SMTP listener --listen 127.0.0.1:2525${ending}`,
    ]);
  });

  test("distinct ports and port 0 pass", () => {
    expect(findMetricsClashes(load('["127.0.0.1:2525"]', "127.0.0.1:9464", 4), undefined, "linux")).toEqual([]);
    expect(findMetricsClashes(load('["127.0.0.1:0"]', "127.0.0.1:0"), undefined, "linux")).toEqual([]);
    expect(findMetricsClashes(parseConfig('server:\n  listen: ["127.0.0.1:2525"]\n', "m.yaml"), undefined, "linux")).toEqual([]);
  });
});
