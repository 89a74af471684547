import { register } from "node:module";

let registered: Promise<void> | undefined;

/**
 * Lets `import()` load TypeScript plugin files (through tsx) and makes
 * `@mailroom/core` and `zod` resolve to the running server's copies from a
 * plugin file anywhere on disk. Runs once per process. When this module is
 * itself TypeScript, the process already runs through a TypeScript loader
 * (vitest, tsx) that handles both, so it does nothing.
 */
export function ensureTypeScriptLoader(): Promise<void> {
  registered ??= (async () => {
    if (import.meta.url.endsWith(".ts")) return;
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
