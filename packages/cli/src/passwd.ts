import { EXIT } from "./cli.js";

/** Reads the new password: the first line of stdin, prompting without echo on a terminal. */
async function readPassword(): Promise<string> {
  const input = process.stdin;
  if (input.isTTY) {
    process.stderr.write("New password: ");
    input.setRawMode(true);
  }
  let text = "";
  for await (const chunk of input) {
    text += String(chunk);
    const end = text.search(/[\r\n\u0004]/);
    if (end !== -1) {
      text = text.slice(0, end);
      break;
    }
  }
  if (input.isTTY) {
    input.setRawMode(false);
    process.stderr.write("\n");
  }
  input.pause();
  return text;
}

/** Adds a user to an auth-file user file or changes the user's password. */
export async function passwdCommand(file: string, user: string): Promise<number> {
  try {
    const password = await readPassword();
    if (password === "") {
      process.stderr.write("mailroom: the password is empty; nothing was changed\n");
      return EXIT.failure;
    }
    const { setPassword } = await import("@mailroom/plugin-auth-file");
    const { created } = await setPassword(file, user, password);
    process.stdout.write(`${created ? "added" : "changed the password of"} ${user} in ${file}\n`);
    return EXIT.ok;
  } catch (error) {
    process.stderr.write(`mailroom: passwd failed: ${(error as Error).message}\n`);
    return EXIT.failure;
  }
}
