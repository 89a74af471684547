/**
 * A Node.js module resolve hook, registered by ensureTypeScriptLoader. It
 * maps the names in `data` to fixed URLs so that every plugin shares the
 * server's @mailroom/core and zod, and it loads TypeScript files outside
 * node_modules as ES modules, since a plugin folder usually has no
 * package.json that declares `"type": "module"`.
 */
let names: Record<string, string> = {};

interface Resolved {
  url: string;
  format?: string | null;
  shortCircuit?: boolean;
}

export function initialize(data: Record<string, string>): void {
  names = data;
}

export async function resolve(
  specifier: string,
  context: unknown,
  next: (specifier: string, context: unknown) => Promise<Resolved>,
): Promise<Resolved> {
  const url = names[specifier];
  if (url) return { url, shortCircuit: true };

  const resolved = await next(specifier, context);
  const isLocalTypeScript =
    resolved.url.startsWith("file:") &&
    /\.tsx?$/.test(new URL(resolved.url).pathname) &&
    !resolved.url.includes("/node_modules/");
  return isLocalTypeScript ? { ...resolved, format: "module" } : resolved;
}
