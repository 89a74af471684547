import { describe, expect, test } from "vitest";
import { escapeHostname, uniqueName } from "./filename.js";

describe("escapeHostname", () => {
  test("writes / as \\057 and : as \\072", () => {
    expect(escapeHostname("mx/1:25.example")).toBe("mx\\0571\\07225.example");
  });

  test("leaves ordinary host names alone", () => {
    expect(escapeHostname("mx.example.test")).toBe("mx.example.test");
  });

  test("uses localhost for an empty name", () => {
    expect(escapeHostname("")).toBe("localhost");
  });
});

describe("uniqueName", () => {
  test("has the seconds, the unique part and the host", () => {
    const name = uniqueName({ now: 1_733_330_000_123.456, pid: 4242, hostname: "mx.example" });
    expect(name).toMatch(/^1733330000\.M123456P4242Q\d+R[0-9a-f]{16}\.mx\.example$/);
  });

  test("escapes the host and never contains a path separator or colon", () => {
    const name = uniqueName({ hostname: "a/b:c" });
    expect(name.endsWith(".a\\057b\\072c")).toBe(true);
    expect(name).not.toMatch(/[/:]/);
  });

  test("gives distinct names for the same instant and process", () => {
    const names = new Set(
      Array.from({ length: 10_000 }, () => uniqueName({ now: 1_000_000, pid: 1, hostname: "h" })),
    );
    expect(names.size).toBe(10_000);
  });

  test("uses the process id and the machine's host name by default", () => {
    expect(uniqueName()).toContain(`P${process.pid}Q`);
  });
});
