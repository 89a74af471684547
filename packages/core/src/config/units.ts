import { z } from "zod";

const SIZE_UNITS: Record<string, number> = {
  B: 1,
  KB: 1024,
  MB: 1024 ** 2,
  GB: 1024 ** 3,
};

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Parses `25MB`, `512KB` or a byte count; KB, MB and GB are powers of 1024. */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isInteger(value) && value >= 0 ? value : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)?\s*$/i.exec(value);
  if (!match) return undefined;
  const unit = SIZE_UNITS[(match[2] ?? "B").toUpperCase()]!;
  return Math.round(Number(match[1]) * unit);
}

/** Parses `30s`, `5m`, `5d`, `250ms` or a number of milliseconds. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? value : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  if (!match) return undefined;
  return Math.round(Number(match[1]) * DURATION_UNITS[match[2] ?? "ms"]!);
}

/**
 * The longest delay a Node.js timer accepts: 2^31-1 ms, about 24.8 days.
 * Node.js runs a timer with a longer delay after 1 ms instead.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Bounds of a size or duration option; `min` and `max` are inclusive. */
export interface RangeOptions {
  min?: number;
  max?: number;
}

/**
 * Builds a zod schema for sizes: bytes or a string such as `25MB`, read as a
 * safe integer of at least `min` (0 by default) octets.
 */
export const size = (range: RangeOptions = {}) => {
  const min = range.min ?? 0;
  const max = Math.min(range.max ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  return z.union([z.number(), z.string()]).transform((value, context) => {
    const bytes = parseSize(value);
    if (bytes === undefined) {
      context.addIssue({
        code: "custom",
        message: `expected a size in bytes or with a unit (KB, MB, GB), received ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    if (bytes < min || bytes > max) {
      const bound = bytes < min ? min : max;
      const expected = `${bytes < min ? "at least" : "at most"} ${bound} ${bound === 1 ? "octet" : "octets"}`;
      context.addIssue({ code: "custom", message: `expected a size of ${expected}, received ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return bytes;
  });
};

/** Formats a limit for an error message, in days (rounded down to a tenth) when it is that long. */
function formatDuration(ms: number): string {
  if (ms < 86_400_000) return `${ms} ms`;
  return `${Math.floor(ms / 8_640_000) / 10} days (${ms} ms)`;
}

/**
 * Builds a zod schema for durations: milliseconds or a string such as `30s`,
 * from `min` (0 by default) to `max`. The default `max` is MAX_TIMER_MS
 * because most durations end up in a timer. An option that is never passed
 * to a timer whole may set a larger `max`.
 */
export const duration = (range: RangeOptions = {}) => {
  const min = range.min ?? 0;
  const max = range.max ?? MAX_TIMER_MS;
  return z.union([z.number(), z.string()]).transform((value, context) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      context.addIssue({
        code: "custom",
        message: `expected a duration in milliseconds or with a unit (ms, s, m, h, d), received ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    if (ms < min) {
      const expected = min === 1 ? "a duration above 0" : `a duration of at least ${formatDuration(min)}`;
      context.addIssue({ code: "custom", message: `expected ${expected}, received ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    if (ms > max) {
      const reason = max === MAX_TIMER_MS ? ", the longest delay a Node.js timer can wait" : "";
      context.addIssue({
        code: "custom",
        message: `expected a duration of at most ${formatDuration(max)}${reason}, received ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    return ms;
  });
};
