import { isIP } from "node:net";
import { z } from "zod";
import { MAX_REPLY_LINE } from "../replies.js";
import { duration, size } from "./units.js";

/** The port a name server listens on when its entry names none. */
export const DNS_PORT = 53;

/**
 * Parses a name server entry: an IPv4 address, a bracketed IPv6 address or a
 * bare IPv6 address, with an optional port (53 by default) after the
 * IPv4 address or the brackets. Returns undefined for anything else, such
 * as a host name, which would need a resolver to find the resolver.
 */
export function parseNameServerAddress(text: string): { host: string; port: number } | undefined {
  const trimmed = text.trim();
  if (isIP(trimmed) === 6) return { host: trimmed, port: DNS_PORT };
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(trimmed);
  if (!match) return undefined;
  const host = match[1] ?? match[2]!;
  if (isIP(host) !== (match[1] === undefined ? 4 : 6)) return undefined;
  const port = match[3] === undefined ? DNS_PORT : Number(match[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host, port };
}

const nameServer = z.string().refine((value) => parseNameServerAddress(value) !== undefined, {
  message: "expected an IP address with an optional port (default 53): 192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53 or 2001:db8::53",
});

/** Parses `host:port`, `[v6]:port` or a bare port into its parts. */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  if (match) {
    const port = Number(match[3]);
    if (port > 65535) return undefined;
    return { host: match[1] ?? match[2]!, port };
  }
  return undefined;
}

const hostPort = z.string().refine((value) => parseHostPort(value) !== undefined, {
  message: "expected host:port, with IPv6 in brackets as [::1]:2525",
});

/** A listen entry: `host:port`, or an object for TLS and submission ports. */
const listener = z.preprocess(
  (value) => (typeof value === "string" ? { address: value } : value),
  z.strictObject({
    address: hostPort,
    /** TLS from the first byte (port 465) instead of STARTTLS. */
    implicitTls: z.boolean().default(false),
    /** AUTH is required before MAIL (a submission port). */
    requireAuth: z.boolean().default(false),
  }),
);

const certificate = z.strictObject({ key: z.string(), cert: z.string() });

/**
 * Returns `host:port` in one spelling per address: a lower-case host name,
 * IPv6 in its shortest form. Port 0 gets a new port on each bind, so such
 * entries never collide and return undefined.
 */
function bindKey(address: string): string | undefined {
  const target = parseHostPort(address);
  if (!target || target.port === 0) return undefined;
  let host = target.host.toLowerCase();
  if (isIP(host) === 6) host = new URL(`http://[${host}]/`).hostname;
  return `${host}:${target.port}`;
}

/**
 * Finds listen addresses that repeat an earlier one, in any spelling of the
 * same address, and returns each with the index of the first. A second
 * listener on an address fails to bind with EADDRINUSE. Port 0 never repeats.
 */
export function repeatedListenAddresses(addresses: readonly string[]): { index: number; first: number }[] {
  const seen = new Map<string, number>();
  const repeated: { index: number; first: number }[] = [];
  for (const [index, address] of addresses.entries()) {
    const key = bindKey(address);
    if (key === undefined) continue;
    const first = seen.get(key);
    if (first === undefined) seen.set(key, index);
    else repeated.push({ index, first });
  }
  return repeated;
}

/** Listen entries: the same address twice would fail the second bind with EADDRINUSE. */
const listenList = z
  .array(listener)
  .min(1)
  .superRefine((entries, context) => {
    for (const { index, first } of repeatedListenAddresses(entries.map((entry) => entry.address))) {
      context.addIssue({
        code: "custom",
        path: [index, "address"],
        message: `${entries[index]!.address} is already listed as listen[${first}]; the second listener would fail with EADDRINUSE`,
      });
    }
  });

export const limitsSchema = z
  .strictObject({
    maxMessageSize: size()
      .refine((bytes) => bytes > 0, "expected a size above 0 (EHLO would advertise SIZE 0, which means no limit)")
      .default(25 * 1024 * 1024),
    maxRecipients: z.number().int().min(1).default(100),
    maxCommandLength: z.number().int().min(512).default(512),
    maxAuthLineLength: z.number().int().min(512).default(12288),
    maxDataLineLength: size({ min: 1 }).default(1024 * 1024),
    maxConnections: z.number().int().min(1).default(1000),
    maxConnectionsPerIp: z.number().int().min(1).default(50),
    // Neither timeout can be turned off: a client that stops sending would hold its connection forever.
    idleTimeout: duration({ min: 1 }).default(300_000),
    /** Longest wait for more message bytes during DATA; each chunk that arrives restarts it. */
    dataTimeout: duration({ min: 1 }).default(600_000),
    maxErrors: z.number().int().min(1).default(10),
  })
  .prefault({});

export const serverSchema = z
  .strictObject({
    hostname: z
      .string()
      .regex(/^[\x21-\x7e]+$/, "expected a host name without spaces or control characters")
      .default("localhost"),
    listen: listenList.prefault(["127.0.0.1:2525"]),
    /** Text after `220 <hostname> ESMTP` in the greeting. */
    banner: z
      .string()
      .regex(
        /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/,
        "expected printable US-ASCII text without leading or trailing spaces, as RFC 5321 allows in a reply",
      )
      .optional(),
    dns: z
      .strictObject({
        nameservers: z.array(nameServer).default([]),
        timeout: duration({ min: 1 }).default(5000),
      })
      .prefault({}),
    limits: limitsSchema,
    tls: certificate
      .extend({ sni: z.record(z.string(), certificate).default({}) })
      .optional(),
    allowInsecureAuth: z.boolean().default(false),
    lineEndings: z.enum(["strict", "normalize"]).default("strict"),
    hookTimeout: duration({ min: 1 }).default(30_000),
    /**
     * Deadline of each plugin's setup at start and reload. Separate from
     * hookTimeout because setup may connect to directories and databases.
     */
    setupTimeout: duration({ min: 1 }).default(30_000),
    /**
     * Deadline of each plugin's close() at reload and shutdown. A close()
     * that misses it is logged and the server goes on without it, so one
     * plugin cannot keep the server from stopping.
     */
    closeTimeout: duration({ min: 1 }).default(30_000),
    /** How long open transactions may go on after SIGTERM; 0 closes every connection at once. */
    shutdownTimeout: duration().default(30_000),
    reverseDns: z
      .strictObject({ enabled: z.boolean().default(false), timeout: duration({ min: 1 }).default(2000) })
      .prefault({}),
    /** Folder for messages while they are received; defaults to the system temp folder. */
    spoolDir: z.string().optional(),
    /**
     * Messages up to `perMessage` octets are kept in memory while they are
     * received, within `total` for all sessions of a process. The rest go to
     * spoolDir, and `perMessage: 0` sends every message there.
     */
    memorySpool: z
      .strictObject({ perMessage: size().default(128 * 1024), total: size().default(64 * 1024 * 1024) })
      .prefault({}),
    logLevel: z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
      .default("info"),
    /** Processes that share the listening sockets (node:cluster); each uses one core. */
    workers: z.number().int().min(1).max(64).default(1),
    /** Serves Prometheus metrics at http://<listen>/metrics when set. */
    metrics: z.strictObject({ listen: hostPort }).optional(),
    /** Accept the PROXY protocol header from these addresses (or all with true). */
    proxyProtocol: z
      .union([z.boolean(), z.array(z.string().refine((address) => isIP(address) !== 0, "expected an IP address"))])
      .default(false),
  })
  .superRefine((server, context) => {
    const greeting = `220 ${server.hostname} ESMTP ${server.banner ?? ""}`;
    if (server.banner !== undefined && greeting.length > MAX_REPLY_LINE) {
      context.addIssue({
        code: "custom",
        path: ["banner"],
        message: `the greeting "220 <hostname> ESMTP <banner>" would be ${greeting.length} octets; RFC 5321 allows ${MAX_REPLY_LINE} without CRLF, so shorten the banner`,
      });
    }
    if (server.tls) return;
    for (const [index, entry] of server.listen.entries()) {
      if (!entry.implicitTls) continue;
      context.addIssue({
        code: "custom",
        path: ["listen", index, "implicitTls"],
        message: `listen ${entry.address} has implicitTls but server.tls is not configured; set server.tls.key and server.tls.cert, or remove implicitTls`,
      });
    }
  })
  .prefault({});

export const pluginEntrySchema = z.strictObject({
  use: z.string().min(1),
  with: z.record(z.string(), z.unknown()).default({}),
});

export const configSchema = z.strictObject({
  server: serverSchema,
  plugins: z.array(pluginEntrySchema).default([]),
});

export type MailroomConfig = z.output<typeof configSchema>;
export type ServerConfig = MailroomConfig["server"];
export type Limits = ServerConfig["limits"];
export type ListenerConfig = ServerConfig["listen"][number];
export type PluginEntry = MailroomConfig["plugins"][number];
