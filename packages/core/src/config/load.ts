import { readFile } from "node:fs/promises";
import path from "node:path";
import { isNode, LineCounter, parseDocument, type Document, type YAMLError } from "yaml";
import type { z } from "zod";
import { configSchema, type MailroomConfig } from "./schema.js";

/** An invalid config: the message names the file, line and option path. */
export class ConfigError extends Error {
  readonly code = "MAILROOM_CONFIG_INVALID";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConfigError";
  }
}

/** A config file as read: the validated config plus what is needed to report errors. */
export interface LoadedConfig {
  config: MailroomConfig;
  /** Absolute path of the config file, or "<inline>". */
  file: string;
  /** Folder that relative paths resolve against. */
  dir: string;
  /** Returns the 1-based line of the value at `keyPath`, when known. */
  lineOf(keyPath: (string | number)[]): number | undefined;
}

function formatPath(keyPath: readonly PropertyKey[]): string {
  let text = "";
  for (const key of keyPath) {
    if (typeof key === "number") text += `[${key}]`;
    else text += text ? `.${String(key)}` : String(key);
  }
  return text || "(top level)";
}

/** Formats zod issues as `file:line: path: message` lines. */
export function formatIssues(
  error: z.ZodError,
  where: { file: string; lineOf: LoadedConfig["lineOf"]; prefix?: (string | number)[] },
): string {
  return error.issues
    .map((issue) => {
      const keyPath = [...(where.prefix ?? []), ...(issue.path as (string | number)[])];
      const line = where.lineOf(keyPath) ?? where.lineOf(keyPath.slice(0, -1));
      const location = line ? `${where.file}:${line}` : where.file;
      return `${location}: ${formatPath(keyPath)}: ${issue.message}`;
    })
    .join("\n");
}

function lineFinder(document: Document, counter: LineCounter) {
  return (keyPath: (string | number)[]): number | undefined => {
    for (let length = keyPath.length; length >= 0; length--) {
      const node = document.getIn(keyPath.slice(0, length), true);
      if (isNode(node) && node.range) return counter.linePos(node.range[0]).line;
    }
    return undefined;
  };
}

function resolvePaths(config: MailroomConfig, dir: string): MailroomConfig {
  const resolve = (file: string) => path.resolve(dir, file);
  const { tls } = config.server;
  if (tls) {
    tls.key = resolve(tls.key);
    tls.cert = resolve(tls.cert);
    for (const entry of Object.values(tls.sni)) {
      entry.key = resolve(entry.key);
      entry.cert = resolve(entry.cert);
    }
  }
  if (config.server.spoolDir) config.server.spoolDir = resolve(config.server.spoolDir);
  return config;
}

/**
 * Formats a YAML syntax error as `file:line:column: invalid YAML: reason`,
 * followed by the text of that line as a JSON string, which shows a tab (a
 * common cause) as \t. An error at the end of the file says so instead.
 */
function yamlErrorMessage(error: YAMLError, text: string, file: string, counter: LineCounter): string {
  const reason = error.message.trim().replace(/\.$/, "");
  const offset = error.pos?.[0];
  if (offset === undefined) return `${file}: invalid YAML: ${reason}`;
  const { line, col } = counter.linePos(offset);
  const source = text.split(/\r?\n/)[line - 1] ?? "";
  let context = "";
  if (text.slice(offset).trim() === "") context = " (at the end of the file)";
  else if (source.trim() !== "") context = `. Line ${line} is ${JSON.stringify(source)}`;
  return `${file}:${line}:${col}: invalid YAML: ${reason}${context}`;
}

/** Parses and validates config text; `file` is used in messages and for relative paths. */
export function parseConfig(text: string, file = "<inline>", dir = process.cwd()): LoadedConfig {
  const counter = new LineCounter();
  // Without prettyErrors the yaml package keeps the message to the reason,
  // and yamlErrorMessage adds the position and the line's text itself.
  const document = parseDocument(text, { lineCounter: counter, prettyErrors: false });
  if (document.errors.length > 0) {
    throw new ConfigError(yamlErrorMessage(document.errors[0]!, text, file, counter));
  }

  const lineOf = lineFinder(document, counter);
  const result = configSchema.safeParse(document.toJS() ?? {});
  if (!result.success) {
    throw new ConfigError(formatIssues(result.error, { file, lineOf }), { cause: result.error });
  }
  return { config: resolvePaths(result.data, dir), file, dir, lineOf };
}

/** Reads, parses and validates a config file. */
export async function loadConfig(file: string): Promise<LoadedConfig> {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = await readFile(absolute, "utf8");
  } catch (error) {
    throw new ConfigError(
      `${absolute}: cannot read the config file: ${(error as Error).message}`,
      { cause: error },
    );
  }
  return parseConfig(text, absolute, path.dirname(absolute));
}
