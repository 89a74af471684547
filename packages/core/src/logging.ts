import { stdSerializers } from "pino";
import { mapStackTrace } from "./plugins/typescript.js";

/**
 * pino serializers for a server's loggers: errors are written as pino's
 * standard `err` serializer writes them, with the stack frames of compiled
 * TypeScript plugins pointing at their source files.
 */
export const logSerializers = {
  err(error: Error) {
    const serialized = stdSerializers.err(error);
    if (typeof serialized.stack === "string") serialized.stack = mapStackTrace(serialized.stack);
    return serialized;
  },
};

/**
 * Returns the `code` property of an error (EACCES, ERR_MODULE_NOT_FOUND,
 * MAILROOM_USER_FILE_INVALID) if it is a non-empty string, else undefined.
 * Takes any thrown value, since JavaScript can throw anything.
 */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === "string" && code !== "" ? code : undefined;
}

/**
 * Returns an error's message for one line of output, followed by its code
 * in brackets when the message does not contain it. Node's system errors
 * start their message with the code, so it is not repeated for them.
 */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = errorCode(error);
  return code && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
}

/**
 * A JSON.stringify replacer that writes each Error as its type, message and
 * code. Without it JSON.stringify writes an Error as {}, because those
 * properties are not enumerable.
 */
export function errorJsonReplacer(_key: string, value: unknown): unknown {
  if (!(value instanceof Error)) return value;
  const code = errorCode(value);
  return { type: value.name, message: value.message, ...(code ? { code } : {}) };
}
