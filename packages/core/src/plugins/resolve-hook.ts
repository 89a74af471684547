/**
 * A Node.js module resolve hook, registered by ensureTypeScriptLoader: maps
 * the names in `data` to fixed URLs so that every plugin shares the server's
 * @mailroom/core and zod.
 */
let names: Record<string, string> = {};

export function initialize(data: Record<string, string>): void {
  names = data;
}

export async function resolve(
  specifier: string,
  context: unknown,
  next: (specifier: string, context: unknown) => Promise<unknown>,
): Promise<unknown> {
  const url = names[specifier];
  if (url) return { url, shortCircuit: true };
  return next(specifier, context);
}
