import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { readNearestPackageJson } from "./package-json.js";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "mailroom-package-json-"));
  await writeFile(path.join(root, "package.json"), JSON.stringify({ name: "outer", type: "module" }));
  await mkdir(path.join(root, "inner/src"), { recursive: true });
  await writeFile(path.join(root, "inner/package.json"), JSON.stringify({ name: "inner" }));
  await writeFile(path.join(root, "inner/src/index.js"), "");
  await mkdir(path.join(root, "broken"));
  await writeFile(path.join(root, "broken/package.json"), "{ not json");
  await mkdir(path.join(root, "array"));
  await writeFile(path.join(root, "array/package.json"), "[]");
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

test("package folder finds its own file", () => {
  const found = readNearestPackageJson(path.join(root, "inner"));
  expect(found?.file).toBe(path.join(root, "inner/package.json"));
  expect(found?.manifest).toEqual({ name: "inner" });
});

test("nested folder finds the nearest one", () => {
  expect(readNearestPackageJson(path.join(root, "inner/src"))?.manifest?.name).toBe("inner");
});

test("file path starts at its folder", () => {
  expect(readNearestPackageJson(path.join(root, "inner/src/index.js"))?.manifest?.name).toBe("inner");
});

test("missing path starts above it", () => {
  expect(readNearestPackageJson(path.join(root, "missing/deeper"))?.manifest?.name).toBe("outer");
});

test("invalid JSON stops the search", () => {
  const found = readNearestPackageJson(path.join(root, "broken"));
  expect(found?.file).toBe(path.join(root, "broken/package.json"));
  expect(found?.manifest).toBeUndefined();
});

test("JSON that is not an object has no manifest", () => {
  expect(readNearestPackageJson(path.join(root, "array"))?.manifest).toBeUndefined();
});

test("unreadable package.json stops the search", async () => {
  // A folder named package.json cannot be read as a file (EISDIR), even by root.
  await mkdir(path.join(root, "unreadable/package.json"), { recursive: true });
  const found = readNearestPackageJson(path.join(root, "unreadable"));
  expect(found?.file).toBe(path.join(root, "unreadable/package.json"));
  expect(found?.manifest).toBeUndefined();
});
