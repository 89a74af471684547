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
