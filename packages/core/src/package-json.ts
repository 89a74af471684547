import { readFileSync } from "node:fs";
import path from "node:path";

/** A package.json file that readNearestPackageJson found. */
export interface NearestPackageJson {
  /** The absolute path of the file. */
  file: string;
  /** The parsed content, or undefined when the file cannot be read or is not a JSON object. */
  manifest: Record<string, unknown> | undefined;
}

/**
 * Finds the package.json in `folder` or in the nearest folder above it that
 * has one, and parses it. Returns undefined when no folder up to the root
 * has a package.json. A `folder` that is a file or does not exist is passed
 * over, so the search starts at the nearest folder above it.
 */
export function readNearestPackageJson(folder: string): NearestPackageJson | undefined {
  for (let dir = path.resolve(folder); ; dir = path.dirname(dir)) {
    const file = path.join(dir, "package.json");
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // Any other error, such as EACCES, means the file is there but cannot be read.
      if (code !== "ENOENT" && code !== "ENOTDIR") return { file, manifest: undefined };
      if (dir === path.dirname(dir)) return undefined;
      continue;
    }
    return { file, manifest: parseObject(text) };
  }
}

function parseObject(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const isObject = typeof value === "object" && value !== null && !Array.isArray(value);
  return isObject ? (value as Record<string, unknown>) : undefined;
}
