import { access, constants } from "node:fs/promises";
import path from "node:path";
import { listenerWarnings, type LoadedConfig, type LoadedPlugin } from "@mailroom/core";

const OPEN_NETWORKS = new Set(["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96"]);

/** A range wider than an IPv4 /8 or an IPv6 /16, which no office network needs. */
function isBroad(network: string): boolean {
  const [address = "", prefix] = network.trim().split("/");
  if (prefix === undefined) return false;
  const bits = Number(prefix);
  return address.includes(":") ? bits < 16 : bits < 8;
}

/** Finds the nearest folder that exists, so a root created on demand is checked where it will be made. */
async function nearestExisting(folder: string): Promise<string> {
  let current = folder;
  while (true) {
    try {
      await access(current, constants.F_OK);
      return current;
    } catch {
      const parent = path.dirname(current);
      if (parent === current) return current;
      current = parent;
    }
  }
}

/**
 * Lists risky setups in a valid config: no plugin that accepts recipients,
 * a requireAuth listener with no plugin for AUTH or without TLS, an open
 * relay, a maildir root or spool folder the server cannot write, memory
 * spool sizes that cannot work as written.
 */
export async function findWarnings(loaded: LoadedConfig, plugins: readonly LoadedPlugin[]): Promise<string[]> {
  const warnings: string[] = [];
  const server = loaded.config.server;
  if (server.spoolDir !== undefined) {
    const spoolDir = path.resolve(loaded.dir, server.spoolDir);
    const existing = await nearestExisting(spoolDir);
    try {
      await access(existing, constants.W_OK);
    } catch {
      warnings.push(`server.spoolDir ${spoolDir} is not writable (checked ${existing}): messages that do not fit server.memorySpool get 451`);
    }
  }
  const { perMessage, total } = server.memorySpool;
  if (perMessage > total) {
    warnings.push(`server.memorySpool.perMessage (${perMessage} octets) is larger than memorySpool.total (${total}): no message that large ever fits in memory`);
  }
  if (perMessage > server.limits.maxMessageSize) {
    warnings.push(`server.memorySpool.perMessage (${perMessage} octets) is above limits.maxMessageSize (${server.limits.maxMessageSize}), so every message may be kept in memory while it arrives`);
  }
  if (!plugins.some((plugin) => typeof plugin.hooks.rcpt === "function")) {
    warnings.push("no plugin handles rcpt, so every recipient is rejected with 550 5.7.1");
  }
  // The same text as the warnings that `start` logs for such listeners.
  const handlesAuth = plugins.some((plugin) => typeof plugin.hooks.auth === "function");
  for (const warning of listenerWarnings(server, server.listen, handlesAuth)) {
    warnings.push(`listen ${warning.address}: ${warning.message}`);
  }

  for (const [index, entry] of loaded.config.plugins.entries()) {
    const where = `plugins[${index}] (${entry.use})`;
    const networks = entry.with.trustedNetworks;
    if (Array.isArray(networks)) {
      const open = networks.filter((network) => OPEN_NETWORKS.has(String(network).trim()));
      if (open.length) {
        warnings.push(`${where}: trustedNetworks contains ${open.join(", ")}: this is an open relay, anyone may send anywhere`);
      }
      const broad = networks.filter((network) => !open.includes(network) && isBroad(String(network)));
      if (broad.length) {
        warnings.push(`${where}: trustedNetworks contains ${broad.join(", ")}: ranges this wide let much of the Internet relay`);
      }
    }
    if (entry.use.endsWith("plugin-maildir") && typeof entry.with.root === "string") {
      const root = path.resolve(loaded.dir, entry.with.root);
      const existing = await nearestExisting(root);
      try {
        await access(existing, constants.W_OK);
      } catch {
        warnings.push(`${where}: maildir root ${root} is not writable (checked ${existing})`);
      }
    }
  }
  return warnings;
}
