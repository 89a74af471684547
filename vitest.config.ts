import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const source = (path: string) => fileURLToPath(new URL(path, import.meta.url));

// Tests run against the TypeScript sources; the aliases keep every package on
// the same copy of @mailroom/core.
export default defineConfig({
  resolve: {
    alias: {
      "@mailroom/core": source("./packages/core/src/index.ts"),
      "@mailroom/testing": source("./packages/testing/src/index.ts"),
      "@mailroom/plugin-maildir": source("./plugins/maildir/src/index.ts"),
      "@mailroom/plugin-relay": source("./plugins/relay/src/index.ts"),
      "@mailroom/plugin-vrfy": source("./plugins/vrfy/src/index.ts"),
      "@mailroom/plugin-mx": source("./plugins/mx/src/index.ts"),
      "@mailroom/plugin-auth-file": source("./plugins/auth-file/src/index.ts"),
    },
  },
  test: {
    include: [
      "packages/*/src/**/*.test.ts",
      "plugins/*/src/**/*.test.ts",
      "examples/*/**/*.test.ts",
      "test/**/*.test.ts",
      // Matches no file at the root. With --dir FOLDER, the patterns are
      // relative to FOLDER, so this one runs the local plugin tests directly
      // in it, as `mailroom new plugin --local` prints.
      "*.test.ts",
    ],
    exclude: ["**/node_modules/**", "**/dist/**"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
  },
});
