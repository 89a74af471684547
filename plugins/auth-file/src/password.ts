import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from "node:crypto";

/** scrypt cost parameters (RFC 7914): CPU/memory cost N, block size r, parallelism p. */
export interface ScryptCost {
  N: number;
  r: number;
  p: number;
}

/**
 * The cost of new hashes: N = 2^14, r = 8, p = 1 needs 16 MiB per check.
 * Every AUTH attempt pays it once, on libuv's thread pool.
 */
export const DEFAULT_COST: Readonly<ScryptCost> = Object.freeze({ N: 2 ** 14, r: 8, p: 1 });

const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Memory limit of one check. scrypt needs 128 * N * r * p bytes, and a hash that needs more is invalid. */
const MAX_MEMORY = 256 * 1024 * 1024;

/** A parsed `scrypt$N$r$p$salt$hash` string. */
export interface PasswordHash extends ScryptCost {
  salt: Buffer;
  key: Buffer;
}

const BASE64 = /^[A-Za-z0-9+/]+$/;

/** Checks a cost and returns what is wrong with it, or undefined when it is usable. */
export function checkCost(cost: ScryptCost): string | undefined {
  const { N, r, p } = cost;
  if (!Number.isInteger(N) || N < 2 || N > 2 ** 24 || (N & (N - 1)) !== 0) {
    return `N must be a power of 2 between 2 and 2^24, got ${N}`;
  }
  if (!Number.isInteger(r) || r < 1 || r > 64) return `r must be an integer from 1 to 64, got ${r}`;
  if (!Number.isInteger(p) || p < 1 || p > 16) return `p must be an integer from 1 to 16, got ${p}`;
  if (memoryFor(cost) > MAX_MEMORY) {
    return `N * r * p needs ${memoryFor(cost)} bytes of memory, more than the limit of ${MAX_MEMORY}`;
  }
  return undefined;
}

function memoryFor(cost: ScryptCost): number {
  return 128 * cost.N * cost.r * cost.p;
}

function decodeBase64(text: string): Buffer | undefined {
  return BASE64.test(text) ? Buffer.from(text, "base64") : undefined;
}

function encodeBase64(bytes: Buffer): string {
  return bytes.toString("base64").replace(/=+$/, "");
}

/** Parses `scrypt$N$r$p$salt$hash` (salt and hash in base64 without padding). */
export function parsePasswordHash(text: string): PasswordHash | { error: string } {
  const parts = text.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") {
    return { error: "expected scrypt$N$r$p$salt$hash" };
  }
  const [, n, r, p, saltText, keyText] = parts as [string, string, string, string, string, string];
  if (![n, r, p].every((value) => /^\d{1,9}$/.test(value))) {
    return { error: "N, r and p must be decimal integers" };
  }
  const cost = { N: Number(n), r: Number(r), p: Number(p) };
  const costError = checkCost(cost);
  if (costError) return { error: costError };
  const salt = decodeBase64(saltText);
  const key = decodeBase64(keyText);
  if (!salt || salt.length < 8) return { error: "salt must be at least 8 bytes of base64" };
  if (!key || key.length < 16 || key.length > 128) return { error: "hash must be 16 to 128 bytes of base64" };
  return { ...cost, salt, key };
}

function derive(password: string, salt: Buffer, length: number, cost: ScryptCost): Promise<Buffer> {
  const options: ScryptOptions = {
    N: cost.N,
    r: cost.r,
    p: cost.p,
    // Node's default maxmem is 32 MiB, which N = 2^15 with r = 8 already exceeds.
    maxmem: memoryFor(cost) + 1024 * 1024,
  };
  // Passwords are compared as UTF-8 after NFC, so the same text typed on any system matches.
  const bytes = Buffer.from(password.normalize("NFC"), "utf8");
  return new Promise((resolve, reject) => {
    scrypt(bytes, salt, length, options, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

/** Hashes a password with a new random salt; returns `scrypt$N$r$p$salt$hash`. */
export async function hashPassword(password: string, cost: ScryptCost = DEFAULT_COST): Promise<string> {
  const costError = checkCost(cost);
  if (costError) throw new RangeError(`invalid scrypt cost: ${costError}`);
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, KEY_BYTES, cost);
  return `scrypt$${cost.N}$${cost.r}$${cost.p}$${encodeBase64(salt)}$${encodeBase64(key)}`;
}

/** Derives the key for `password` with the hash's salt and cost and compares it in constant time. */
export async function verifyPassword(password: string, hash: PasswordHash): Promise<boolean> {
  const key = await derive(password, hash.salt, hash.key.length, hash);
  return timingSafeEqual(key, hash.key);
}
