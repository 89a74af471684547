import { randomBytes } from "node:crypto";
import { open, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { DEFAULT_COST, hashPassword, parsePasswordHash, type PasswordHash, type ScryptCost } from "./password.js";

/** A user file that cannot be read or parsed; the message names the file and line. */
export class UserFileError extends Error {
  readonly code = "MAILROOM_USER_FILE_INVALID";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UserFileError";
  }
}

const MAX_USER_LENGTH = 256;
const MAX_PASSWORD_LENGTH = 1024;

/** Checks a user name and returns what is wrong with it, or undefined when it is valid. */
export function checkUserName(user: string): string | undefined {
  if (user === "") return "user name is empty";
  if (user.length > MAX_USER_LENGTH) return `user name is longer than ${MAX_USER_LENGTH} characters`;
  if (/[:\s\p{Cc}]/u.test(user)) return "user name must not contain a colon, whitespace or control character";
  // parseUserFile skips lines that start with "#", so such a user could never log in.
  if (user.startsWith("#")) return 'user name must not start with "#", which marks a comment line in the user file';
  return undefined;
}

/**
 * Parses a user file into a map from user name to hash. The file has one
 * user per line, `name:scrypt$N$r$p$salt$hash`, and blank lines and lines
 * starting with `#` are ignored. `file` is used in error messages.
 */
export function parseUserFile(text: string, file: string): Map<string, PasswordHash> {
  const users = new Map<string, PasswordHash>();
  const lines = text.split("\n");
  for (const [index, raw] of lines.entries()) {
    const line = raw.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    const where = `${file}:${index + 1}`;
    const colon = line.indexOf(":");
    if (colon === -1) throw new UserFileError(`${where}: expected user:scrypt$N$r$p$salt$hash`);
    const user = line.slice(0, colon);
    const userError = checkUserName(user);
    if (userError) throw new UserFileError(`${where}: ${userError}`);
    if (users.has(user)) throw new UserFileError(`${where}: user ${user} is listed twice`);
    const hash = parsePasswordHash(line.slice(colon + 1));
    if ("error" in hash) throw new UserFileError(`${where}: invalid password hash for ${user}: ${hash.error}`);
    users.set(user, hash);
  }
  return users;
}

/** Reads and parses a user file. */
export async function readUserFile(file: string): Promise<Map<string, PasswordHash>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (error as Error).message;
    throw new UserFileError(
      `cannot read user file ${file}: ${reason}. Create it with \`mailroom passwd ${file} USER\``,
      { cause: error },
    );
  }
  return parseUserFile(text, file);
}

/** Serialises setPassword calls on the same file within this process. */
const pending = new Map<string, Promise<unknown>>();

export interface SetPasswordOptions {
  /** scrypt cost of the new hash; DEFAULT_COST unless given. */
  cost?: ScryptCost;
  /** How long to wait for another process's lock on the file, in ms (default 5000). */
  lockTimeout?: number;
}

/**
 * Adds a user or changes a user's password. The file is rewritten through
 * a temporary file that is fsync'd and renamed over it, so a reader sees
 * the old file or the new one, never a part. Other lines, comments
 * included, are kept as they are. A `FILE.lock` file keeps two processes
 * from losing each other's change. Returns whether the user is new.
 */
export async function setPassword(
  file: string,
  user: string,
  password: string,
  options: SetPasswordOptions = {},
): Promise<{ created: boolean }> {
  const userError = checkUserName(user);
  if (userError) throw new RangeError(`invalid user name ${JSON.stringify(user)}: ${userError}`);
  if (password === "") throw new RangeError("password is empty");
  if (password.length > MAX_PASSWORD_LENGTH) {
    throw new RangeError(`password is longer than ${MAX_PASSWORD_LENGTH} characters`);
  }

  const absolute = path.resolve(file);
  const previous = pending.get(absolute) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(() => updateFile(absolute, user, password, options));
  pending.set(absolute, run);
  try {
    return await run;
  } finally {
    if (pending.get(absolute) === run) pending.delete(absolute);
  }
}

async function updateFile(
  file: string,
  user: string,
  password: string,
  options: SetPasswordOptions,
): Promise<{ created: boolean }> {
  const hash = await hashPassword(password, options.cost ?? DEFAULT_COST);
  const release = await lock(file, options.lockTimeout ?? 5000);
  try {
    let text = "";
    let mode = 0o600;
    try {
      text = await readFile(file, "utf8");
      mode = (await stat(file)).mode & 0o777;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }

    const lines = text === "" ? [] : text.replace(/\r?\n$/, "").split(/\r?\n/);
    const entry = `${user}:${hash}`;
    const index = lines.findIndex((line) => line.trim().startsWith(`${user}:`));
    if (index === -1) lines.push(entry);
    else lines[index] = entry;
    await writeAtomically(file, `${lines.join("\n")}\n`, mode);
    return { created: index === -1 };
  } finally {
    await release();
  }
}

async function writeAtomically(file: string, text: string, mode: number): Promise<void> {
  const temporary = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  const handle = await open(temporary, "wx", mode);
  try {
    await handle.writeFile(text, "utf8");
    await handle.chmod(mode);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  const directory = await open(path.dirname(file), "r");
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/** Creates `FILE.lock` exclusively, retrying until `timeout`, and returns the function that removes it. */
async function lock(file: string, timeout: number): Promise<() => Promise<void>> {
  const lockFile = `${file}.lock`;
  const deadline = Date.now() + timeout;
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(lockFile, "wx", 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return () => rm(lockFile, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        throw new Error(`cannot write user file ${file}: folder ${path.dirname(file)} does not exist`, { cause: error });
      }
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      if (Date.now() >= deadline) {
        throw new Error(
          `user file ${file} is locked by another process. If no other \`mailroom passwd\` is running, remove ${lockFile}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(20 * 2 ** Math.min(attempt, 4), 250)));
    }
  }
}
