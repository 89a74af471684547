import { Command, CommanderError, Help, InvalidArgumentError, Option } from "commander";
import { readFileSync } from "node:fs";
import path from "node:path";
import { checkCommand } from "./check.js";
import { passwdCommand } from "./passwd.js";
import { queueCommand } from "./queue.js";
import { EXIT, reportError } from "./report.js";
import { scaffoldPlugin } from "./scaffold.js";
import { startCommand } from "./start.js";

export { EXIT } from "./report.js";

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function collect(value: string, previous: string[] = []): string[] {
  if (!/^(?:\[[^\]]+\]|[^:[\]]+):\d{1,5}$/.test(value)) {
    throw new InvalidArgumentError(`expected HOST:PORT, with IPv6 in brackets as [::1]:2525; received ${value}`);
  }
  return [...previous, value];
}

const CONFIG_HELP = "path of the YAML config file";

/** Adds "(required)" to the help of a mandatory option, which commander's help leaves unmarked. */
function describeOption(this: Help, option: Option): string {
  const text = Help.prototype.optionDescription.call(this, option);
  return option.mandatory ? `${text} (required)` : text;
}

/** Builds the command tree; `run` receives each command's exit code. */
export function buildProgram(run: (work: Promise<number>) => void): Command {
  const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  const program = new Command("mailroom")
    .description("Run and manage a Mailroom mail server")
    .version(manifest.version, "-V, --version", "print the version of @mailroom/cli")
    .exitOverride()
    .showHelpAfterError()
    // Set before the subcommands are added, because they copy it then.
    .configureHelp({ optionDescription: describeOption });

  program
    .command("start")
    .description("start the server and run until SIGTERM or SIGINT")
    .requiredOption("-c, --config <file>", CONFIG_HELP)
    .option("-l, --listen <host:port>", "listen here instead of server.listen; repeat for several", collect)
    .addOption(new Option("--log-level <level>", "log level, replacing server.logLevel").choices(LOG_LEVELS))
    .action((options: { config: string; listen?: string[]; logLevel?: string }) => {
      run(startCommand(options));
    });

  program
    .command("check")
    .description("validate the config, load the plugins and list the hooks each handles")
    .requiredOption("-c, --config <file>", CONFIG_HELP)
    .action((options: { config: string }) => {
      run(checkCommand(options));
    });

  const queue = program
    .command("queue")
    .description("inspect and manage the outbound queue of @mailroom/plugin-mx");
  const config = () => new Option("-c, --config <file>", CONFIG_HELP).makeOptionMandatory();
  queue
    .command("list")
    .description("list queued records: id, sender, domain, recipients, attempts, next attempt, last error")
    .addOption(config())
    .action((options: { config: string }) => run(queueCommand(options.config, { action: "list" })));
  queue
    .command("show <id>")
    .description("print every field of one record")
    .addOption(config())
    .action((id: string, options: { config: string }) => run(queueCommand(options.config, { action: "show", id })));
  queue
    .command("retry [id]")
    .description("make a record, or with --all every record, due now")
    .addOption(config())
    .option("--all", "every record")
    .action((id: string | undefined, options: { config: string; all?: boolean }) =>
      run(queueCommand(options.config, { action: "retry", ...(id ? { id } : {}), ...(options.all ? { all: true } : {}) })),
    );
  queue
    .command("delete <id>")
    .description("remove a record without delivering it or sending a bounce")
    .addOption(config())
    .action((id: string, options: { config: string }) => run(queueCommand(options.config, { action: "delete", id })));

  program
    .command("passwd <file> <user>")
    .description("add a user to an auth-file user file or change its password (prompted on a terminal, else the only line of stdin)")
    .action((file: string, user: string) => run(passwdCommand(file, user)));

  program
    .command("new")
    .description("create a new project part")
    .command("plugin <name>")
    .description("create a private plugin package in DIR/NAME, or with --local a single file and its test")
    .option("-d, --dir <dir>", "parent folder, relative to the working folder: a package goes in DIR/NAME, a --local plugin in DIR/NAME.ts and DIR/NAME.test.ts", "plugins")
    .option("--local", "write one TypeScript file and its test instead of a package")
    .option("--public", 'leave "private": true out of package.json, so that lerna and npm publish the package')
    .action((name: string, options: { dir: string; local?: boolean; public?: boolean }) => {
      // The next step is printed after the list of files, where it is read last.
      let nextStep: string | undefined;
      const note = (text: string) => {
        nextStep = text;
      };
      run(
        scaffoldPlugin({ name, dir: path.resolve(options.dir), local: options.local ?? false, publish: options.public ?? false, note }).then(
          (files) => {
            process.stdout.write(`created:\n${files.map((file) => `  ${file}`).join("\n")}\n`);
            if (nextStep) process.stderr.write(`mailroom: next step: ${nextStep}\n`);
            return EXIT.ok;
          },
          (error: unknown) => reportError("new plugin", error),
        ),
      );
    });

  return program;
}

/** Runs the command line and resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let work: Promise<number> | undefined;
  const program = buildProgram((promise) => {
    work = promise;
  });
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      const isHelp = error.code === "commander.helpDisplayed" || error.code === "commander.version";
      return isHelp || error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    throw error;
  }
  return work ?? EXIT.ok;
}
