import { HOOK_NAMES, loadConfig, loadTlsFiles, MailroomServer } from "@mailroom/core";
import { pino } from "pino";
import { EXIT, reportError } from "./report.js";
import { checkListenAddresses } from "./listen-overlap.js";
import { findWarnings } from "./warnings.js";

/**
 * Validates a config file and starts its plugins once, without listening,
 * to print them in order with the hooks each handles. It also fails on what
 * `start` would only hit when it listens: TLS files that OpenSSL rejects and
 * listen addresses that overlap. Resolves with the exit code.
 */
export async function checkCommand(options: { config: string }): Promise<number> {
  try {
    const loaded = await loadConfig(options.config);
    loadTlsFiles(loaded);
    checkListenAddresses(loaded);
    const server = await MailroomServer.create(loaded, { logger: pino({ level: "silent" }) });
    const lines = [
      `${loaded.file}: valid`,
      `listen: ${loaded.config.server.listen.map((entry) => entry.address).join(", ")}`,
      "plugins:",
    ];
    for (const [index, plugin] of server.plugins.entries()) {
      const hooks = HOOK_NAMES.filter((hook) => typeof plugin.hooks[hook] === "function");
      const routes = [...plugin.routes];
      const routeText = routes.length ? `; routes: ${routes.join(", ")}` : "";
      lines.push(`  ${index + 1}. ${plugin.name}: ${hooks.join(", ") || "(no hooks)"}${routeText}`);
    }
    if (server.plugins.length === 0) lines.push("  (none)");
    for (const warning of await findWarnings(loaded, server.plugins)) lines.push(`warning: ${warning}`);
    await server.close();
    process.stdout.write(`${lines.join("\n")}\n`);
    return EXIT.ok;
  } catch (error) {
    return reportError("check", error);
  }
}
