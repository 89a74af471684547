import { stat } from "node:fs/promises";
import path from "node:path";
import type { ReadStream } from "node:tty";
import { CommandError, EXIT, reportError, UsageError } from "./report.js";

/** The maximum length of piped stdin that passwd reads: a password line, not a file. */
const MAX_PIPED_INPUT = 64 * 1024;

/**
 * Reads one line from a terminal in raw mode, so that the password is not
 * echoed. Raw mode turns off the terminal's own line editing, so Backspace
 * and Ctrl-U are handled here, and Ctrl-C cancels.
 */
async function readTerminal(input: ReadStream): Promise<string> {
  // Raw mode first, so that keys typed as soon as the prompt shows are not echoed.
  input.setRawMode(true);
  process.stderr.write("New password: ");
  let password = "";
  try {
    for await (const chunk of input) {
      for (const character of String(chunk)) {
        if (character === "\r" || character === "\n" || character === "\u0004") return password;
        if (character === "\u0003") throw new CommandError("cancelled; nothing was changed");
        if (character === "\u007f" || character === "\b") password = [...password].slice(0, -1).join("");
        else if (character === "\u0015") password = "";
        else password += character;
      }
    }
    return password;
  } finally {
    input.setRawMode(false);
    process.stderr.write("\n");
  }
}

/**
 * Reads stdin to its end and returns its only line. A line break after the
 * password and empty lines after it are allowed. Any further text is an
 * error, because using only the first line would drop the rest silently.
 */
async function readPiped(input: NodeJS.ReadableStream): Promise<string> {
  let text = "";
  for await (const chunk of input) {
    text += String(chunk);
    if (text.length > MAX_PIPED_INPUT) {
      throw new CommandError(`stdin is longer than ${MAX_PIPED_INPUT} characters; give only the password, on one line (nothing was changed)`);
    }
  }
  const [password = "", ...rest] = text.split(/\r\n|\r|\n/);
  const extra = rest.filter((line) => line !== "").length;
  if (password === "" && extra > 0) {
    throw new CommandError("the first line of stdin is empty; give only the password, on one line (nothing was changed)");
  }
  if (extra > 0) {
    throw new CommandError(
      `stdin has ${extra} more non-empty line${extra === 1 ? "" : "s"} after the password; give only the password, on one line (nothing was changed)`,
    );
  }
  return password;
}

/** Reads the new password: a prompt without echo on a terminal, or else the only line of stdin. */
async function readPassword(): Promise<string> {
  const input = process.stdin;
  // Decoded as a stream, so a character split between two chunks stays whole.
  input.setEncoding("utf8");
  try {
    return input.isTTY ? await readTerminal(input) : await readPiped(input);
  } finally {
    input.pause();
  }
}

/**
 * Checks the folder of the user file before the password is read, so that
 * the user does not type a password for a file that cannot be written.
 */
async function checkFolder(file: string): Promise<void> {
  const folder = path.dirname(path.resolve(file));
  let isFolder: boolean;
  try {
    isFolder = (await stat(folder)).isDirectory();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    throw new CommandError(`folder ${folder} does not exist; create it, or give a user file in an existing folder (nothing was changed)`);
  }
  if (!isFolder) throw new CommandError(`${folder} is not a folder, so ${file} cannot be written (nothing was changed)`);
}

/** Adds a user to an auth-file user file or changes the user's password. */
export async function passwdCommand(file: string, user: string): Promise<number> {
  try {
    const { checkUserName, setPassword } = await import("@mailroom/plugin-auth-file");
    const userError = checkUserName(user);
    if (userError) throw new UsageError(`invalid user name ${JSON.stringify(user)}: ${userError}`);
    await checkFolder(file);
    const password = await readPassword();
    if (password === "") throw new CommandError("the password is empty; nothing was changed");
    const { created } = await setPassword(file, user, password);
    process.stdout.write(`${created ? "added" : "changed the password of"} ${user} in ${file}\n`);
    return EXIT.ok;
  } catch (error) {
    return reportError("passwd", error);
  }
}
