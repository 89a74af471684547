import { stat } from "node:fs/promises";
import path from "node:path";
import {
  definePlugin,
  deny,
  denyDisconnect,
  denySoft,
  duration,
  ok,
  systemClock,
  TOKENS,
  z,
  type Clock,
  type Connection,
} from "@mailroom/core";
import { DEFAULT_COST, hashPassword, parsePasswordHash, verifyPassword, type PasswordHash } from "./password.js";
import { BoundedSemaphore } from "./semaphore.js";
import { readUserFile } from "./user-file.js";

export {
  DEFAULT_COST,
  checkCost,
  hashPassword,
  parsePasswordHash,
  verifyPassword,
  type PasswordHash,
  type ScryptCost,
} from "./password.js";
export {
  checkUserName,
  parseUserFile,
  readUserFile,
  setPassword,
  UserFileError,
  type SetPasswordOptions,
} from "./user-file.js";

export const optionsSchema = z.strictObject({
  /** The user file; a relative path resolves against the config file's folder. */
  file: z.string().min(1),
  /** Wait before the reply to a failed attempt. It doubles with each further failure on a connection. */
  failureDelay: duration().default(1000),
  /** Upper bound of that wait. */
  maxFailureDelay: duration().default(10_000),
  /** Failed attempts on one connection before it is closed. */
  maxFailures: z.number().int().min(1).default(5),
  /**
   * Password checks that run at once. Each one takes a thread of libuv's
   * pool (4 threads unless UV_THREADPOOL_SIZE is set), which file
   * writes and DNS lookups share.
   */
  maxConcurrentChecks: z.number().int().min(1).default(2),
  /** Attempts that may wait for a check. Past that, an attempt gets 454 4.7.0 at once. */
  maxQueuedChecks: z.number().int().min(0).default(16),
});

export type AuthFileOptions = z.output<typeof optionsSchema>;

/** Interval between warnings about attempts turned away while every check slot was taken. */
const BUSY_LOG_INTERVAL = 10_000;

/** Returns the wait after the `failures`-th failure: failureDelay, doubled per failure, capped. */
export function failureWait(failures: number, options: AuthFileOptions, hookTimeout: number): number {
  const doubled = options.failureDelay * 2 ** Math.min(failures - 1, 30);
  // The wait must end well inside the hook deadline, or the client gets 454 instead of 535.
  return Math.min(doubled, options.maxFailureDelay, Math.floor(hookTimeout / 2));
}

export default definePlugin({
  name: "auth-file",
  options: optionsSchema,
  async setup(context) {
    const { options, logger } = context;
    const file = path.resolve(context.configDir, options.file);
    // Setup runs again on every reload, so a reload re-reads the file.
    const users = await readUserFile(file);
    const mode = (await stat(file)).mode;
    if (mode & 0o004) {
      logger.warn({ file, mode: (mode & 0o777).toString(8) }, "user file is readable by every local user, run chmod 600 on it");
    }
    logger.info({ file, users: users.size }, "user file loaded");

    const clock = context.container.isRegistered(TOKENS.Clock, true)
      ? context.container.resolve<Clock>(TOKENS.Clock)
      : systemClock;
    const hookTimeout = context.config.server.hookTimeout;
    // Unknown users are checked against a hash of the same cost as the file's
    // first user, so that an unknown name takes as long as a wrong password.
    const first = users.values().next();
    const decoyCost = first.done ? DEFAULT_COST : first.value;
    const decoy = parsePasswordHash(
      await hashPassword("decoy password", { N: decoyCost.N, r: decoyCost.r, p: decoyCost.p }),
    ) as PasswordHash;
    const failures = new WeakMap<Connection, number>();
    const checks = new BoundedSemaphore(options.maxConcurrentChecks, options.maxQueuedChecks);
    let busyRejections = 0;
    let busyLoggedAt = -Infinity;

    return {
      async auth({ connection, username, password }) {
        const entry = users.get(username);
        const permitted = await checks.acquire(connection.signal);
        if (!permitted) {
          // A client that has gone reads no reply, so its attempt just ends.
          if (connection.signal.aborted) return deny();
          busyRejections += 1;
          if (clock.now() - busyLoggedAt >= BUSY_LOG_INTERVAL) {
            logger.warn(
              { remote: connection.remoteAddress, rejected: busyRejections, queued: checks.waiting },
              "password checks busy, AUTH attempts answered with 454",
            );
            busyLoggedAt = clock.now();
            busyRejections = 0;
          }
          return denySoft({ code: 454, enhanced: "4.7.0", message: "Too many authentication attempts in progress, try again later" });
        }
        let matches: boolean;
        try {
          matches = await verifyPassword(password, entry ?? decoy);
        } finally {
          checks.release();
        }
        if (entry && matches) return ok({ user: username });

        const count = (failures.get(connection) ?? 0) + 1;
        failures.set(connection, count);
        const wait = failureWait(count, options, hookTimeout);
        logger.info(
          {
            user: username,
            remote: connection.remoteAddress,
            reason: entry ? "wrong password" : "unknown user",
            failures: count,
            waitMs: wait,
          },
          "authentication rejected",
        );
        // The delay slows guessing on this connection, so it ends when the client has gone.
        await clock.sleep(wait, connection.signal);
        if (count >= options.maxFailures) {
          logger.warn({ remote: connection.remoteAddress, failures: count }, "too many failed AUTH attempts, closing the connection");
          return denyDisconnect({ code: 535, enhanced: "5.7.8", message: "Authentication credentials invalid" });
        }
        return deny();
      },
    };
  },
});
