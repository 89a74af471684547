import { register } from "node:module";

let registered: Promise<void> | undefined;

/**
 * Lets `import()` load TypeScript plugin files (through tsx) and makes
 * `@mailroom/core` and `zod` resolve to the running server's copies from a
 * plugin file anywhere on disk. Runs once per process; under vitest, which
 * already compiles TypeScript and resolves these names, it does nothing.
 */
export function ensureTypeScriptLoader(): Promise<void> {
  registered ??= (async () => {
    if (process.env.VITEST) return;
    const { register: registerTsx } = await import("tsx/esm/api");
    registerTsx();
    register(new URL("./resolve-hook.js", import.meta.url), {
      data: {
        "@mailroom/core": new URL("../index.js", import.meta.url).href,
        zod: import.meta.resolve("zod"),
      },
    });
  })();
  return registered;
}
