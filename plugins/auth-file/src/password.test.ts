import { describe, expect, test } from "vitest";
import { checkCost, DEFAULT_COST, hashPassword, parsePasswordHash, verifyPassword, type PasswordHash } from "./password.js";

/** A cheap cost, so the tests do not spend their time in scrypt. */
const CHEAP = { N: 1024, r: 8, p: 1 };

function parse(text: string): PasswordHash {
  const hash = parsePasswordHash(text);
  if ("error" in hash) throw new Error(hash.error);
  return hash;
}

describe("hashPassword", () => {
  test("writes scrypt$N$r$p$salt$hash", async () => {
    const text = await hashPassword("secret", CHEAP);
    expect(text).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  });

  test("uses a new salt each time", async () => {
    const first = await hashPassword("secret", CHEAP);
    const second = await hashPassword("secret", CHEAP);
    expect(first).not.toBe(second);
  });

  test("default cost is usable", async () => {
    expect(checkCost(DEFAULT_COST)).toBeUndefined();
    const hash = parse(await hashPassword("secret"));
    expect(hash).toMatchObject({ N: 2 ** 14, r: 8, p: 1 });
    expect(await verifyPassword("secret", hash)).toBe(true);
  });

  test("rejects an invalid cost", async () => {
    await expect(hashPassword("secret", { N: 1000, r: 8, p: 1 })).rejects.toThrow(/power of 2/);
  });
});

describe("verifyPassword", () => {
  test("accepts the right password", async () => {
    const hash = parse(await hashPassword("correct horse", CHEAP));
    expect(await verifyPassword("correct horse", hash)).toBe(true);
  });

  test("rejects a wrong password", async () => {
    const hash = parse(await hashPassword("correct horse", CHEAP));
    expect(await verifyPassword("correct horsE", hash)).toBe(false);
    expect(await verifyPassword("", hash)).toBe(false);
  });

  test("compares after Unicode normalization", async () => {
    const composed = "caf\u00e9";
    const decomposed = "cafe\u0301";
    const hash = parse(await hashPassword(composed, CHEAP));
    expect(await verifyPassword(decomposed, hash)).toBe(true);
  });

  test("checks the key length the hash stores", async () => {
    const hash = parse(await hashPassword("secret", CHEAP));
    const longer = { ...hash, key: Buffer.concat([hash.key, Buffer.alloc(16)]) };
    expect(await verifyPassword("secret", longer)).toBe(false);
  });
});

describe("parsePasswordHash", () => {
  const salt = Buffer.alloc(16, 1).toString("base64").replace(/=+$/, "");
  const key = Buffer.alloc(32, 2).toString("base64").replace(/=+$/, "");

  test("reads every field", () => {
    expect(parse(`scrypt$16384$8$2$${salt}$${key}`)).toMatchObject({ N: 16384, r: 8, p: 2 });
  });

  const invalid: [string, string, RegExp][] = [
    ["other scheme", `bcrypt$16384$8$1$${salt}$${key}`, /expected scrypt/],
    ["missing field", `scrypt$16384$8$${salt}$${key}`, /expected scrypt/],
    ["N not a power of 2", `scrypt$1000$8$1$${salt}$${key}`, /power of 2/],
    ["N not a number", `scrypt$abc$8$1$${salt}$${key}`, /decimal/],
    ["r of zero", `scrypt$16384$0$1$${salt}$${key}`, /r must be/],
    ["too much memory", `scrypt$1048576$64$1$${salt}$${key}`, /memory/],
    ["salt not base64", `scrypt$16384$8$1$not*base64$${key}`, /salt/],
    ["short salt", `scrypt$16384$8$1$AAAA$${key}`, /salt/],
    ["short hash", `scrypt$16384$8$1$${salt}$AAAA`, /hash/],
  ];
  test.each(invalid)("rejects %s", (_name, text, reason) => {
    const hash = parsePasswordHash(text);
    expect("error" in hash ? hash.error : "parsed").toMatch(reason);
  });
});
