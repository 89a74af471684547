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

/** A zod schema for sizes: bytes or a string such as `25MB`. */
export const size = () =>
  z.union([z.number(), z.string()]).transform((value, context) => {
    const bytes = parseSize(value);
    if (bytes === undefined) {
      context.addIssue({
        code: "custom",
        message: `expected a size in bytes or with a unit (KB, MB, GB), received ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    return bytes;
  });

/** A zod schema for durations: milliseconds or a string such as `30s`. */
export const duration = () =>
  z.union([z.number(), z.string()]).transform((value, context) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      context.addIssue({
        code: "custom",
        message: `expected a duration in milliseconds or with a unit (ms, s, m, h, d), received ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    return ms;
  });
