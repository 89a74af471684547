import { expect, test } from "vitest";
import { findListenOptionProblems } from "./listen-overlap.js";

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
