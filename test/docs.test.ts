import { spawnSync } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, test } from "vitest";
import { parseConfig } from "@mailroom/core";
import { startTestServer } from "@mailroom/testing";
import { MAX_REPLY_LINE } from "../packages/core/src/replies.js";

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
  for (const match of text.matchAll(/^```(\w*)([^\n]*)\n([\s\S]*?)^```$/gm)) {
    const file = /\bfile=(\S+)/.exec(match[2]!)?.[1];
    found.push({ language: match[1]!, file, text: match[3]! });
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

test("every block is a file, a command or an error", async () => {
  const found = await blocks("plugins.md");
  const other = found.filter(
    (block) => !block.file && block.language !== "sh" && !(block.language === "text" && block.text.startsWith("invalid options")),
  );
  expect(other).toEqual([]);
});

test("shell blocks run", async () => {
  const commands = (await blocks("plugins.md")).filter((block) => block.language === "sh");
  expect(commands.length).toBeGreaterThan(0);
  for (const block of commands) {
    const result = spawnSync("sh", ["-c", block.text], {
      cwd: WORK,
      encoding: "utf8",
      timeout: 60_000,
      env: { ...process.env, PATH: `${path.join(ROOT, "node_modules/.bin")}:${process.env.PATH}` },
    });
    expect(result.stderr, block.text).not.toMatch(/error/i);
    expect(result.status, block.text).toBe(0);
  }
  const scaffolded = await readFile(path.join(WORK, "plugins/greeter.ts"), "utf8");
  expect(scaffolded).toContain('name: "greeter"');
});

test("error block is what the server prints", async () => {
  const found = await blocks("plugins.md");
  const block = found.find((entry) => entry.language === "text")!;
  // The guide's own config, with the option the error is about left empty.
  const guide = found.find((entry) => entry.file === "mailroom.yaml")!.text;
  const config = guide.replace("domains: [spam.example]", "domains: []").replace('"127.0.0.1:2525"', '"127.0.0.1:0"');
  expect(config).toContain("domains: []");
  const file = path.join(WORK, "invalid.yaml");
  await writeFile(file, config);
  const { loadConfig, MailroomServer } = await import("@mailroom/core");
  const error = await MailroomServer.create(await loadConfig(file)).then(
    () => undefined,
    (thrown: Error) => thrown,
  );
  const expected = block.text.trim().replace("/etc/mailroom/mailroom.yaml", file);
  expect(error?.message).toBe(expected);
});

test("TypeScript blocks compile", () => {
  const files = ["plugins/block-domains.ts", "plugins/archive.ts", "plugins/company-directory.ts", "plugins/subject-rule.ts"];
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
  // The seven tests of the guide, plus the four of the plugin the shell block scaffolds.
  expect(output).toMatch(/Tests\s+11 passed/);
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

test("README config example passes check", async () => {
  const readme = await readFile(path.join(ROOT, "README.md"), "utf8");
  const example = /## Configuration[\s\S]*?^```yaml\n([\s\S]*?)^```$/m.exec(readme)?.[1];
  expect(example).toBeDefined();

  // The files the example names, beside it as its relative paths expect.
  const dir = path.join(WORK, "readme-config");
  await mkdir(path.join(dir, "plugins"), { recursive: true });
  await mkdir(path.join(dir, "tls"), { recursive: true });
  const basic = path.join(ROOT, "examples/basic-server");
  await writeFile(path.join(dir, "plugins/reject-listed-senders.ts"), await readFile(path.join(basic, "plugins/reject-listed-senders.ts")));
  await writeFile(path.join(dir, "blocked-senders.txt"), await readFile(path.join(basic, "blocked-senders.txt")));
  await writeFile(path.join(dir, "users"), "");
  const openssl = spawnSync(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls/key.pem", "-out", "tls/cert.pem", "-days", "90", "-subj", "/CN=mx.example.test"],
    { cwd: dir, encoding: "utf8" },
  );
  expect(openssl.status, openssl.stderr).toBe(0);
  await writeFile(path.join(dir, "mailroom.yaml"), example!);

  const check = spawnSync(process.execPath, [path.join(ROOT, "packages/cli/bin/mailroom.js"), "check", "--config", "mailroom.yaml"], {
    cwd: dir,
    encoding: "utf8",
    timeout: 60_000,
  });
  expect(check.stderr).toBe("");
  expect(check.status).toBe(0);
  expect(check.stdout).not.toContain("warning");
});

test("plugins.md states the reply line limit", async () => {
  const text = (await readFile(path.join(ROOT, "docs", "plugins.md"), "utf8")).replace(/\s+/g, " ");
  expect(text).toContain(`A reply line is at most ${MAX_REPLY_LINE + 2} octets with its CRLF`);
  expect(text).toContain(`after \`550 5.7.1 \` a line has room for ${MAX_REPLY_LINE - "550 5.7.1 ".length} characters of text`);
});
