import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { readFile, unlink, writeFile } from "node:fs/promises";
import { builtinModules, SourceMap } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Plugin as EsbuildPlugin } from "esbuild";
import { removeLeftovers } from "../process-alive.js";

/** True when this module runs as TypeScript under a loader (vitest) that imports .ts files itself. */
const RUNNING_AS_TYPESCRIPT = import.meta.url.endsWith(".ts");

/**
 * The server's own copies, which every plugin must share: a second copy of
 * @mailroom/core would have its own tsyringe container and answer marker.
 */
const SHARED: Record<string, string> = RUNNING_AS_TYPESCRIPT
  ? {}
  : {
      "@mailroom/core": new URL("../index.js", import.meta.url).href,
      zod: import.meta.resolve("zod"),
    };

const BUILTINS = new Set([...builtinModules, ...builtinModules.map((name) => `node:${name}`)]);

let outputDir: string | undefined;
let sequence = 0;

/**
 * Makes this process's folder for compiled plugins; it is removed when the
 * process exits. Folders of processes that are gone (a kill -9 skips the
 * removal) are removed first.
 */
function compiledDir(): string {
  if (!outputDir) {
    removeLeftovers(os.tmpdir(), /^mailroom-plugins-(\d+)-/);
    const dir = mkdtempSync(path.join(os.tmpdir(), `mailroom-plugins-${process.pid}-`));
    outputDir = dir;
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return outputDir;
}

/**
 * Points bare imports at absolute URLs, so the compiled file loads from any
 * folder: @mailroom/core and zod at the server's copies, packages and
 * built-ins as Node.js would resolve them from the importing file.
 */
function resolveImports(): EsbuildPlugin {
  return {
    name: "mailroom-imports",
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, async (args) => {
        if (args.pluginData === "mailroom-inner") return undefined;
        if (SHARED[args.path]) return { path: SHARED[args.path], external: true };
        // Built-ins and URLs (node:, file:, data:) load as they are.
        if (BUILTINS.has(args.path) || /^[a-z][a-z0-9+.-]*:/i.test(args.path)) return { path: args.path, external: true };
        const resolved = await build.resolve(args.path, {
          kind: args.kind,
          importer: args.importer,
          resolveDir: args.resolveDir,
          pluginData: "mailroom-inner",
        });
        if (resolved.errors.length > 0) return { errors: resolved.errors };
        return { path: pathToFileURL(resolved.path).href, external: true };
      });

      // A bundled module no longer sits in its own file, so import.meta
      // would describe the compiled file. Each module gets its own values
      // in variables on its first line (so line numbers stay), and the
      // build's `define` points import.meta.url and the rest at them.
      build.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, async (args) => {
        if (args.path.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
        const source = await readFile(args.path, "utf8");
        const url = JSON.stringify(pathToFileURL(args.path).href);
        // Declarations only, no import, so a CommonJS file stays CommonJS.
        // NOTE: a bare specifier passed to import.meta.resolve is resolved
        // with require.resolve, so a package whose "exports" differ for
        // import and require resolves to its require entry here.
        const facts =
          `var ${META}Url = ${url}, ${META}Filename = ${JSON.stringify(args.path)}, ` +
          `${META}Dirname = ${JSON.stringify(path.dirname(args.path))}, ` +
          `${META}Resolve = (specifier) => /^(\\.{0,2}\\/|[a-z][a-z0-9+.-]*:)/i.test(specifier) ` +
          `? new URL(specifier, ${META}Url).href ` +
          `: process.getBuiltinModule("node:url").pathToFileURL(` +
          `process.getBuiltinModule("node:module").createRequire(${META}Url).resolve(specifier)).href; `;
        // A shebang must stay first; it becomes a comment so the line count holds.
        const body = source.startsWith("#!") ? `//${source.slice(2)}` : source;
        const extension = path.extname(args.path).replace(/^\.[cm]?/, "");
        return { contents: facts + body, loader: extension as "ts" | "tsx" | "js" | "jsx" };
      });
    },
  };
}

/** The prefix of the variables that stand in for import.meta in compiled plugins. */
const META = "__mailroomImportMeta";

/** Formats esbuild's messages as `file:line:column: text` lines. */
function describeFailure(error: unknown): string {
  const messages = (error as { errors?: { text: string; location?: { file: string; line: number; column: number } | null }[] })
    .errors;
  if (!messages?.length) return (error as Error).message;
  return messages
    .map((message) => {
      const where = message.location;
      return where ? `${where.file}:${where.line}:${where.column + 1}: ${message.text}` : message.text;
    })
    .join("\n");
}

/** Source maps of the compiled plugins, by the compiled file's path and its URL. */
const sourceMaps = new Map<string, { map: SourceMap; dir: string }>();

/**
 * Rewrites the frames of a stack trace that point into a compiled plugin
 * so they name the TypeScript source, line and column instead. Node's own
 * source map support would map every error, and Node streams read the stack
 * of each socket error (a client's reset, for one). That cost about 20 µs
 * per connection in the benchmark, so the engine maps only the stacks it
 * logs (see logSerializers).
 */
export function mapStackTrace(stack: string): string {
  if (sourceMaps.size === 0) return stack;
  return stack.replace(/((?:file:\/\/)?[^\s()]+\.mjs):(\d+):(\d+)/g, (frame, file: string, line: string, column: string) => {
    const known = sourceMaps.get(file);
    if (!known) return frame;
    const entry = known.map.findEntry(Number(line) - 1, Number(column) - 1) as {
      originalSource?: string;
      originalLine?: number;
      originalColumn?: number;
    };
    if (!entry.originalSource || entry.originalLine === undefined || entry.originalColumn === undefined) return frame;
    const source = entry.originalSource.startsWith("file:")
      ? fileURLToPath(entry.originalSource)
      : path.resolve(known.dir, entry.originalSource);
    return `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  });
}

/**
 * Imports a plugin file written in TypeScript or as an ES module in
 * JavaScript (`url` is its file URL with a query that makes a reload import
 * it anew). esbuild compiles it together with the local files it imports
 * into one ES module, which is imported and then deleted. Packages stay
 * outside the bundle. A reload compiles the files again, so edits to the
 * modules a plugin imports take effect too. The source map is kept for
 * mapStackTrace.
 */
export async function importCompiled(file: string, url: string): Promise<unknown> {
  // vitest resolves .ts files and the workspace packages on its own.
  if (RUNNING_AS_TYPESCRIPT) return import(url);

  sequence += 1;
  const compiled = path.join(compiledDir(), `${path.basename(file).replace(/\.[^.]+$/, "")}-${sequence}.mjs`);
  const { build, stop } = await import("esbuild");
  let code: string;
  let map: string;
  try {
    const result = await build({
      entryPoints: [file],
      outfile: compiled,
      bundle: true,
      write: false,
      format: "esm",
      platform: "node",
      target: "node20",
      sourcemap: "external",
      absWorkingDir: path.dirname(file),
      logLevel: "silent",
      define: {
        "import.meta.url": `${META}Url`,
        "import.meta.filename": `${META}Filename`,
        "import.meta.dirname": `${META}Dirname`,
        "import.meta.resolve": `${META}Resolve`,
      },
      plugins: [resolveImports()],
    });
    code = result.outputFiles.find((output) => output.path.endsWith(".mjs"))!.text;
    map = result.outputFiles.find((output) => output.path.endsWith(".map"))!.text;
  } catch (error) {
    // esbuild's own message repeats the same errors, so it is not kept as the cause.
    const language = /\.[cm]?tsx?$/.test(file) ? "TypeScript" : "JavaScript";
    throw new Error(`${language} compilation failed:\n${describeFailure(error)}`);
  } finally {
    // esbuild keeps a service process (about 12 MB) for later builds; the
    // next start or reload starts it again.
    await stop();
  }

  const payload = JSON.parse(map) as { sources: string[] } & ConstructorParameters<typeof SourceMap>[0];
  // esbuild writes the sources relative to a folder; they are made absolute
  // against whichever candidate folder contains the file.
  payload.sources = payload.sources.map((source) => {
    const candidates = [path.resolve(path.dirname(file), source), path.resolve(path.dirname(compiled), source)];
    return candidates.find((candidate) => existsSync(candidate)) ?? candidates[0]!;
  });
  const entry = { map: new SourceMap(payload), dir: path.dirname(compiled) };
  sourceMaps.set(compiled, entry);
  sourceMaps.set(pathToFileURL(compiled).href, entry);
  await writeFile(compiled, code, { mode: 0o600 });
  try {
    return await import(pathToFileURL(compiled).href);
  } finally {
    await unlink(compiled).catch(() => undefined);
  }
}
