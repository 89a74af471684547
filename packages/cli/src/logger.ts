import { logSerializers } from "@mailroom/core";
import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

/** Creates the process logger: JSON lines, or pretty text when stdout is a terminal. */
export function createLogger(level: string): Logger {
  if (process.stdout.isTTY) {
    return pino({ level, serializers: logSerializers }, pretty({ colorize: true, sync: true }));
  }
  return pino({ level, serializers: logSerializers });
}
