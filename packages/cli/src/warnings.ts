import { access, constants, stat } from "node:fs/promises";
import path from "node:path";
import { listenerWarnings, tlsWarnings, type LoadedConfig, type LoadedPlugin } from "@mailroom/core";
import { parseNetwork } from "@mailroom/plugin-relay";

/**
 * Classifies a trustedNetworks entry as plugin-relay reads it: "open" for a
 * /0 range, "broad" for one wider than an IPv4 /8 or an IPv6 /16, which no
 * office network needs. An IPv4-mapped range such as `::ffff:0:0/96` counts
 * as the IPv4 range it covers. An entry that is not a network is neither.
 */
function networkWidth(entry: unknown): "open" | "broad" | undefined {
  let network: ReturnType<typeof parseNetwork>;
  try {
    network = parseNetwork(String(entry));
  } catch {
    return undefined;
  }
  if (network.prefixLength === 0) return "open";
  const broadBelow = network.address.kind() === "ipv4" ? 8 : 16;
  return network.prefixLength < broadBelow ? "broad" : undefined;
}

/** Finds the nearest path that exists, so a root created on demand is checked where it will be made. */
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
 * Returns why the server could not write files in `folder`, creating it
 * first if needed, or undefined when it can: the nearest existing path is
 * not a folder (a file where a folder belongs), or it is not writable.
 */
async function folderProblem(folder: string): Promise<string | undefined> {
  const existing = await nearestExisting(folder);
  const isFolder = await stat(existing).then((info) => info.isDirectory(), () => false);
  if (!isFolder) return `cannot be created: ${existing} is not a folder`;
  try {
    await access(existing, constants.W_OK);
    return undefined;
  } catch {
    return `is not writable (checked ${existing})`;
  }
}

/**
 * Lists the plugin-mx queue folders that `start` could not create or write.
 * The plugin creates its folders in start(), which `check` does not run.
 */
async function queueFolderWarnings(loaded: LoadedConfig): Promise<string[]> {
  // Loaded on demand, as in queue.ts, so that the other commands never load plugin code.
  const { queueFolders } = await import("@mailroom/plugin-mx");
  const warnings: string[] = [];
  for (const { index, dir } of queueFolders(loaded)) {
    const problem = await folderProblem(dir);
    const where = `plugins[${index}] (${loaded.config.plugins[index]!.use})`;
    if (problem) warnings.push(`${where}: queueDir ${dir} ${problem}`);
  }
  return warnings;
}

/**
 * Lists the plugin-mx smarthost and routes that point at this host without
 * allowLocal, so that the loop guard defers all their mail and bounces it
 * after maxQueueLifetime. A local content filter on 127.0.0.1 is the usual case.
 */
async function localRouteWarnings(loaded: LoadedConfig): Promise<string[]> {
  const { localRouteHosts } = await import("@mailroom/plugin-mx");
  return localRouteHosts(loaded).map(({ index, option, host, kind }) => {
    const where = `plugins[${index}] (${loaded.config.plugins[index]!.use})`;
    return (
      `${where}: ${option}.host ${host} is ${kind}. The loop guard rejects it, so every message routed there is deferred ` +
      `and bounced after maxQueueLifetime. Set ${option}.allowLocal: true if a local service listens there`
    );
  });
}

/**
 * Lists the problems with the routes that store accepted recipients. The
 * engine replies 451 4.3.0 at RCPT for a recipient accepted on a route that
 * no plugin registered, and 451 4.3.0 after DATA when the route's owner (the
 * first plugin that registered it) has no queue handler.
 */
function storageWarnings(plugins: readonly LoadedPlugin[]): string[] {
  const owners = new Map<string, LoadedPlugin>();
  for (const plugin of plugins) {
    for (const route of plugin.routes) if (!owners.has(route)) owners.set(route, plugin);
  }
  if (owners.size === 0) {
    return [
      "no plugin stores mail: none registers a route (as plugin-maildir and plugin-mx do with registerRoute), so every recipient that a plugin accepts gets 451 4.3.0 at RCPT",
    ];
  }
  const warnings: string[] = [];
  for (const [route, owner] of owners) {
    if (typeof owner.hooks.queue === "function") continue;
    warnings.push(`route "${route}" is registered by plugin ${owner.name}, which has no queue handler, so every message with a recipient on it gets 451 4.3.0 after DATA`);
  }
  return warnings;
}

/**
 * Returns true when plugin-relay with these options accepts some recipients
 * for other domains: it has trusted networks or relay domains, or it lets
 * authenticated clients relay and a plugin handles AUTH.
 */
function relaysFor(options: Record<string, unknown>, plugins: readonly LoadedPlugin[]): boolean {
  const listed = (value: unknown) => Array.isArray(value) && value.length > 0;
  if (listed(options.trustedNetworks) || listed(options.relayDomains)) return true;
  return options.allowAuthenticated !== false && plugins.some((plugin) => typeof plugin.hooks.auth === "function");
}

/**
 * Lists risky setups in a valid config: no plugin that handles rcpt, no
 * plugin that stores accepted recipients, a relaying plugin-relay with no
 * owner of its outbound route,
 * a requireAuth listener with no plugin for AUTH or without TLS, an open relay, a maildir
 * root, plugin-mx queue folder or spool folder the server cannot write, memory spool sizes that
 * cannot work as written, a plugin-mx smarthost or route that points at this host.
 * It also lists TLS certificates that are expired, not yet valid or about to
 * expire, and TLS private key files that their group or other users can access.
 */
export async function findWarnings(loaded: LoadedConfig, plugins: readonly LoadedPlugin[]): Promise<string[]> {
  const warnings: string[] = [];
  const server = loaded.config.server;
  if (server.spoolDir !== undefined) {
    const spoolDir = path.resolve(loaded.dir, server.spoolDir);
    const problem = await folderProblem(spoolDir);
    if (problem) warnings.push(`server.spoolDir ${spoolDir} ${problem}: messages that do not fit server.memorySpool get 451`);
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
  } else {
    warnings.push(...storageWarnings(plugins));
  }
  // The same text as the warnings that `start` logs for such listeners.
  const handlesAuth = plugins.some((plugin) => typeof plugin.hooks.auth === "function");
  for (const warning of listenerWarnings(server, server.listen, handlesAuth)) {
    warnings.push(`listen ${warning.address}: ${warning.message}`);
  }
  // The same text as the warnings that `start` and a reload log.
  for (const warning of tlsWarnings(server)) warnings.push(`${warning.option}: ${warning.message}`);

  for (const [index, entry] of loaded.config.plugins.entries()) {
    const where = `plugins[${index}] (${entry.use})`;
    const networks = entry.with.trustedNetworks;
    if (Array.isArray(networks)) {
      const open = networks.filter((network) => networkWidth(network) === "open");
      if (open.length) {
        warnings.push(`${where}: trustedNetworks contains ${open.join(", ")}: this is an open relay, anyone may send anywhere`);
      }
      const broad = networks.filter((network) => networkWidth(network) === "broad");
      if (broad.length) {
        warnings.push(`${where}: trustedNetworks contains ${broad.join(", ")}: ranges this wide let much of the Internet relay`);
      }
    }
    if (entry.use.endsWith("plugin-relay") && relaysFor(entry.with, plugins) && !plugins.some((plugin) => plugin.routes.has("outbound"))) {
      warnings.push(
        `${where}: some clients may relay, but no plugin registers the route "outbound" (add @mailroom/plugin-mx), so every recipient in another domain gets 451 4.3.0 at RCPT`,
      );
    }
    if (entry.use.endsWith("plugin-maildir") && typeof entry.with.root === "string") {
      const root = path.resolve(loaded.dir, entry.with.root);
      const problem = await folderProblem(root);
      if (problem) warnings.push(`${where}: maildir root ${root} ${problem}`);
    }
  }
  warnings.push(...(await queueFolderWarnings(loaded)));
  warnings.push(...(await localRouteWarnings(loaded)));
  return warnings;
}
