import { ConfigError, describeError } from "@mailroom/core";

/** Exit codes of the mailroom command. */
export const EXIT = {
  ok: 0,
  /** Invalid config or a failure while running. */
  failure: 1,
  /** Unknown command, option or argument, or an argument value that the command rejects. */
  usage: 2,
} as const;

/**
 * An invalid command line that commander's parser accepted: an argument or
 * option value that the command rejects, such as an invalid user name or a
 * `--listen` address given twice. The command exits with EXIT.usage.
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * A failure whose message is complete for the user, such as invalid input
 * on stdin. It is printed without "failed" and without a code, and the
 * command exits with EXIT.failure.
 */
export class CommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CommandError";
  }
}

/**
 * Prints an error of `command` to stderr as one line and returns the exit
 * code for it: EXIT.usage for a UsageError, EXIT.failure for anything else.
 * A ConfigError's message names the file and line and is printed as it is.
 * Other errors are printed with their message and code.
 */
export function reportError(command: string, error: unknown): number {
  if (error instanceof UsageError) {
    process.stderr.write(`mailroom: ${command}: ${error.message}\n`);
    return EXIT.usage;
  }
  if (error instanceof ConfigError) {
    process.stderr.write(`mailroom: ${error.message}\n`);
  } else if (error instanceof CommandError) {
    process.stderr.write(`mailroom: ${command}: ${error.message}\n`);
  } else {
    process.stderr.write(`mailroom: ${command} failed: ${describeError(error)}\n`);
  }
  return EXIT.failure;
}
