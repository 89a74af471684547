import { logSerializers } from "@mailroom/core";
import { pino, type Logger } from "pino";
import pretty from "pino-pretty";

/**
 * Creates the process logger: JSON lines, or pretty text when stdout is a
 * terminal. Both write each line synchronously. pino's default destination
 * writes in libuv's thread pool, and at process.exit() it writes the lines
 * still buffered at once, while an earlier write may still wait for a pool
 * thread. That earlier line then comes after them or is lost, for example
 * "stopping" after "server stopped" while plugins keep the pool busy.
 */
export function createLogger(level: string): Logger {
  if (process.stdout.isTTY) {
    return pino({ level, serializers: logSerializers }, pretty({ colorize: true, sync: true }));
  }
  return pino({ level, serializers: logSerializers }, pino.destination({ dest: 1, sync: true }));
}
