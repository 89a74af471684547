import { spawnSync } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, test } from "vitest";
import { parseConfig } from "@mailroom/core";
import { startTestServer } from "@mailroom/testing";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
// Inside examples/ so that the repository's vitest config picks up the tests.
const WORK = path.join(ROOT, "examples", `zz-docs-${process.pid}`);

interface Block {
  language: string;
  file: string | undefined;
  text: string;
}

async function blocks(document: string): Promise<Block[]> {
  const text = await readFile(path.join(ROOT, "docs", document), "utf8");
  const found: Block[] = [];
  for (const match of text.matchAll(/^```(\w*)(?: file=(\S+))?\n([\s\S]*?)^```$/gm)) {
    found.push({ language: match[1]!, file: match[2], text: match[3]! });
  }
  return found;
}

beforeAll(async () => {
  await rm(WORK, { recursive: true, force: true });
  for (const block of await blocks("plugins.md")) {
    if (!block.file) continue;
    const target = path.join(WORK, block.file);
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, block.text);
  }
});

afterAll(async () => {
  await rm(WORK, { recursive: true, force: true });
});

test("every TypeScript and YAML block has a file name", async () => {
  const unnamed = (await blocks("plugins.md")).filter(
    (block) => (block.language === "ts" || block.language === "yaml") && !block.file,
  );
  expect(unnamed).toEqual([]);
});

test("TypeScript blocks compile", () => {
  const files = ["plugins/block-domains.ts", "plugins/archive.ts", "plugins/company-directory.ts"];
  const result = spawnSync(
    "npx",
    [
      "tsc",
      "--noEmit",
      "--strict",
      "--module", "NodeNext",
      "--moduleResolution", "NodeNext",
      "--target", "ES2022",
      "--skipLibCheck",
      "--types", "node",
      ...files.map((file) => path.join(WORK, file)),
    ],
    { cwd: ROOT, encoding: "utf8", timeout: 120_000 },
  );
  expect(result.stdout + result.stderr).toBe("");
  expect(result.status).toBe(0);
});

test("test blocks pass under vitest", () => {
  const result = spawnSync("npx", ["vitest", "run", path.relative(ROOT, path.join(WORK, "plugins"))], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 120_000,
  });
  const output = (result.stdout + result.stderr).replace(/\u001b\[[0-9;]*m/g, "");
  expect(output).toMatch(/Tests\s+5 passed/);
  expect(result.status).toBe(0);
});

test("config block loads its plugins and serves", async () => {
  const text = await readFile(path.join(WORK, "mailroom.yaml"), "utf8");
  expect(parseConfig(text).config.plugins).toHaveLength(2);

  const config = text.replace('["127.0.0.1:2525"]', '["127.0.0.1:0"]');
  const server = await startTestServer(config, { dir: WORK });
  const client = await server.connect();
  await client.command("EHLO client.test");
  expect((await client.command("MAIL FROM:<bulk@spam.example>")).code).toBe(550);
  const replies = await client.send({ from: "friend@mail.example", to: ["alice@example.test"], message: "Subject: hi\r\n\r\nhello\r\n" });
  expect(replies.at(-1)?.code).toBe(250);
  client.close();
  await server.stop();
});

test("directory block provides the UserDirectory service", async () => {
  const { TOKENS } = await import("@mailroom/core");
  const { testPlugin } = await import("@mailroom/testing");
  const plugin = (await import(path.join(WORK, "plugins/company-directory.ts"))).default;
  const harness = await testPlugin(plugin, { users: { "example.test": ["alice", "bob"] } });
  const directory = harness.container.resolve<import("@mailroom/core").UserDirectory>(TOKENS.UserDirectory);
  expect(await directory.domains()).toEqual(["example.test"]);
  expect(await directory.lookup("Alice", "EXAMPLE.test")).toEqual({ mailbox: "alice", domain: "example.test" });
  expect(await directory.lookup("carol", "example.test")).toBeNull();
  expect(await directory.findLocalPart("bob")).toHaveLength(1);
});
