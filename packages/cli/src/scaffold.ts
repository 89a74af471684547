import { mkdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";

/** Versions the generated package depends on: the ones this CLI was released with. */
const CORE_VERSION = "0.1.0";

function pluginSource(name: string, coreImport = "@mailroom/core"): string {
  return `import { definePlugin, deny, z } from "${coreImport}";

/** Rejects senders whose domain is listed in \`blockedDomains\`. */
export default definePlugin({
  name: "${name}",
  options: z.object({
    blockedDomains: z.array(z.string()).default([]),
  }),
  setup({ options, logger }) {
    const blocked = new Set(options.blockedDomains.map((domain) => domain.toLowerCase()));
    return {
      mail({ address }) {
        if (!address || !blocked.has(address.domain)) return undefined;
        logger.info({ sender: address.address }, "sender domain blocked");
        return deny({ code: 550, enhanced: "5.7.1", message: "Sender domain rejected" });
      },
    };
  },
});
`;
}

function testSource(importPath: string): string {
  return `import { testPlugin } from "@mailroom/testing";
import { expect, test } from "vitest";
import plugin from "${importPath}";

const harness = await testPlugin(plugin, { blockedDomains: ["spam.example"] });

test.each([
  ["someone@spam.example", "DENY", 550],
  ["someone@mail.example", "CONT", 250],
  ["", "CONT", 250],
])("sender %s", async (sender, verdict, code) => {
  const call = await harness.session().mail(sender);
  expect(call.verdict).toBe(verdict);
  expect(call.code).toBe(code);
});
`;
}

function readme(name: string, local: boolean): string {
  const use = local ? `./${name}.ts` : name;
  return `# ${name}

A Mailroom plugin. It rejects senders whose domain is in \`blockedDomains\`.

## Use

\`\`\`yaml
plugins:
  - use: "${use}"
    with:
      blockedDomains: [spam.example]
\`\`\`

## Test

\`\`\`
npx vitest run
\`\`\`
`;
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

async function writeNew(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, text, { flag: "wx" });
}

/**
 * Creates a plugin: a package folder `dir/NAME` by default, or with `local`
 * a single `dir/NAME.ts` and its test. Returns the files written; refuses
 * to overwrite anything.
 */
export async function scaffoldPlugin(options: { name: string; dir: string; local: boolean }): Promise<string[]> {
  const { name, dir, local } = options;
  if (!/^(?:@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/.test(name)) {
    throw new Error(`invalid plugin name "${name}": use lower-case letters, digits, ".", "_" and "-", with an optional @scope/`);
  }
  const base = name.split("/").pop()!;

  if (local) {
    const files = [path.join(dir, `${base}.ts`), path.join(dir, `${base}.test.ts`)];
    for (const file of files) if (await exists(file)) throw new Error(`${file} already exists`);
    await writeNew(files[0]!, pluginSource(base));
    await writeNew(files[1]!, testSource(`./${base}.ts`));
    return files;
  }

  const root = path.join(dir, base);
  if (await exists(root)) throw new Error(`${root} already exists`);
  const packageJson = {
    name,
    version: "0.1.0",
    description: `Mailroom plugin ${name}`,
    type: "module",
    main: "./dist/index.js",
    types: "./dist/index.d.ts",
    exports: { ".": { types: "./dist/index.d.ts", default: "./dist/index.js" } },
    files: ["dist", "!dist/**/*.test.*", "README.md"],
    scripts: { build: "tsc -p .", test: "vitest run" },
    peerDependencies: { "@mailroom/core": `^${CORE_VERSION}` },
    devDependencies: {
      "@mailroom/testing": `^${CORE_VERSION}`,
      typescript: "5.9.3",
      vitest: "4.1.12",
    },
  };
  const tsconfig = {
    compilerOptions: {
      target: "ES2022",
      module: "NodeNext",
      moduleResolution: "NodeNext",
      strict: true,
      declaration: true,
      rootDir: "src",
      outDir: "dist",
      skipLibCheck: true,
    },
    include: ["src"],
    exclude: ["src/**/*.test.ts"],
  };
  const files: [string, string][] = [
    [path.join(root, "package.json"), `${JSON.stringify(packageJson, null, 2)}\n`],
    [path.join(root, "tsconfig.json"), `${JSON.stringify(tsconfig, null, 2)}\n`],
    [path.join(root, "README.md"), readme(name, false)],
    [path.join(root, "src", "index.ts"), pluginSource(name)],
    [path.join(root, "src", "index.test.ts"), testSource("./index.js")],
  ];
  for (const [file, text] of files) await writeNew(file, text);
  return files.map(([file]) => file);
}
