// Real components for the outbound tests: a DNS server serving zone
// fixtures, remote mail exchangers, a controllable clock, and a server with
// plugin-mx whose local route writes files.
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import DNS from "dns2";
import { pino } from "pino";
import { SMTPServer } from "smtp-server";
import { container, TOKENS, type Clock, type DependencyContainer } from "@mailroom/core";
import { startTestServer, type TestServer } from "@mailroom/testing";

/** The zone entry of a name: records by type, or a failure behaviour. */
export type ZoneEntry =
  | "servfail"
  | "refused"
  | "timeout"
  | { MX?: [number, string][]; A?: string[]; AAAA?: string[] };
export type Zone = Record<string, ZoneEntry>;

export interface DnsFixture {
  port: number;
  nameserver: string;
  queries: { name: string; type: string }[];
  close(): Promise<void>;
}

const TYPE_NAMES = Object.fromEntries(Object.entries(DNS.Packet.TYPE).map(([name, value]) => [value, name]));

/** Starts a dns2 server on 127.0.0.1 port 0; names not in the zone are NXDOMAIN. */
export async function startDns(zone: Zone): Promise<DnsFixture> {
  const queries: { name: string; type: string }[] = [];
  const server = DNS.createServer({
    udp: true,
    handle(request, send) {
      const question = request.questions[0]!;
      const name = question.name.toLowerCase().replace(/\.$/, "");
      const type = TYPE_NAMES[question.type] ?? String(question.type);
      queries.push({ name, type });
      const response = DNS.Packet.createResponseFromRequest(request);
      const entry = zone[name];
      if (entry === "timeout") return;
      if (entry === "servfail") response.header.rcode = DNS.Packet.RCODE.SERVFAIL;
      else if (entry === "refused") response.header.rcode = DNS.Packet.RCODE.REFUSED;
      else if (!entry) response.header.rcode = DNS.Packet.RCODE.NXDOMAIN;
      else {
        const base = { name: question.name, class: DNS.Packet.CLASS.IN, ttl: 60 };
        if (type === "MX") {
          for (const [priority, exchange] of entry.MX ?? []) {
            response.answers.push({ ...base, type: DNS.Packet.TYPE.MX, priority, exchange } as never);
          }
        }
        if (type === "A" || type === "AAAA") {
          for (const address of entry[type] ?? []) {
            response.answers.push({ ...base, type: DNS.Packet.TYPE[type], address } as never);
          }
        }
      }
      send(response);
    },
  });
  const addresses = await server.listen({ udp: { port: 0, address: "127.0.0.1" } });
  const port = (addresses as { udp: { port: number } }).udp.port;
  return {
    port,
    nameserver: `127.0.0.1:${port}`,
    queries,
    close: () => server.close().then(() => undefined),
  };
}

/** A message a remote mail exchanger received. */
export interface Received {
  from: string;
  to: string[];
  data: string;
  connection: string;
  secure: boolean;
  helo: string;
  /** The authenticated user, when the client sent AUTH. */
  user?: string;
}

export interface RemoteMx {
  port: number;
  received: Received[];
  connections: number;
  /** Connections open now, and the most that were open at once. */
  open: number;
  maxOpen: number;
  /** Per recipient reply: undefined accepts; a code and text refuse. */
  rcpt: (address: string) => { code: number; message: string } | undefined;
  close(): Promise<void>;
}

/** Starts a real SMTP server on 127.0.0.1 port 0 that records what it receives. */
export async function startRemoteMx(
  options: {
    tls?: boolean;
    brokenTls?: boolean;
    rcpt?: RemoteMx["rcpt"];
    dataDelay?: number;
    /** Accept AUTH with this user and password only. */
    auth?: { user: string; pass: string };
    /** Address to listen on; 127.0.0.1 by default. */
    host?: string;
    /** Port to listen on; a free one by default. */
    port?: number;
    /** Recipients taken per transaction; each further RCPT gets "452 4.5.3 Too many recipients". */
    maxRecipients?: number;
  } = {},
): Promise<RemoteMx> {
  const remote: RemoteMx = {
    port: 0,
    received: [],
    connections: 0,
    open: 0,
    maxOpen: 0,
    rcpt: options.rcpt ?? (() => undefined),
    close: async () => undefined,
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: options.tls || options.brokenTls ? [] : ["STARTTLS"],
    // Offers STARTTLS but only with protocol versions no current client accepts.
    ...(options.brokenTls ? { minVersion: "TLSv1" as const, maxVersion: "TLSv1" as const } : {}),
    logger: false,
    onConnect(session, callback) {
      remote.connections += 1;
      remote.open += 1;
      remote.maxOpen = Math.max(remote.maxOpen, remote.open);
      callback();
    },
    onClose() {
      remote.open -= 1;
    },
    onAuth(auth, _session, callback) {
      const valid = options.auth && auth.username === options.auth.user && auth.password === options.auth.pass;
      if (valid) return callback(null, { user: auth.username });
      callback(new Error("Invalid username or password"));
    },
    onRcptTo(address, session, callback) {
      if (options.maxRecipients !== undefined && session.envelope.rcptTo.length >= options.maxRecipients) {
        return callback(Object.assign(new Error("4.5.3 Too many recipients"), { responseCode: 452 }));
      }
      const refusal = remote.rcpt(address.address);
      if (!refusal) return callback();
      callback(Object.assign(new Error(refusal.message), { responseCode: refusal.code }));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        remote.received.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((item) => item.address),
          data: Buffer.concat(chunks).toString("utf8"),
          connection: session.id,
          secure: session.secure,
          helo: session.hostNameAppearsAs,
          ...(typeof session.user === "string" ? { user: session.user } : {}),
        });
        setTimeout(() => callback(), options.dataDelay ?? 0);
      });
    },
  });
  // Failed handshakes are part of some tests; they must not end the test process.
  server.on("error", () => undefined);
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve()));
  remote.port = (server.server.address() as net.AddressInfo).port;
  remote.close = () => new Promise((resolve) => server.close(() => resolve()));
  return remote;
}

/** A TCP server on 127.0.0.1 whose connections a test handles byte by byte. */
export interface RawListener {
  port: number;
  /** Destroys the open connections and stops the server. */
  close(): Promise<void>;
}

/**
 * Listens on 127.0.0.1 port 0 and passes each connection to `handler`.
 * Socket errors are ignored, because the tests reset and stall connections
 * on purpose.
 */
export async function listenRaw(handler: (socket: net.Socket) => void): Promise<RawListener> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => sockets.delete(socket));
    handler(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  const close = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return { port, close };
}

/** A TCP server that accepts connections and never sends a byte. */
export async function startSilentServer(): Promise<{ port: number; connections: number; close(): Promise<void> }> {
  const state = { port: 0, connections: 0, close: async () => undefined as void };
  const listener = await listenRaw(() => {
    state.connections += 1;
  });
  state.port = listener.port;
  state.close = listener.close;
  return state;
}

export { TestClock } from "@mailroom/testing";

const ACCEPT_ALL = `
import { mkdir, writeFile } from "node:fs/promises";
import { buffer } from "node:stream/consumers";
import { definePlugin, ok } from "@mailroom/core";

// Accepts every recipient: local.test goes to files in ./local, the rest outbound.
export default definePlugin({
  name: "accept-all",
  setup(context) {
    context.registerRoute("local");
    let count = 0;
    return {
      rcpt: ({ address }) => ok({ route: address.domain === "local.test" ? "local" : "outbound" }),
      async queue({ message, recipients }) {
        const dir = context.configDir + "/local";
        await mkdir(dir, { recursive: true });
        const data = await buffer(message.storedCopy());
        const name = dir + "/" + Date.now() + "-" + process.pid + "-" + (count++) + ".eml";
        await writeFile(name, JSON.stringify({ to: recipients.map((r) => r.address.address), data: data.toString("utf8") }));
        return ok();
      },
    };
  },
});
`;

export const MX_PLUGIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../plugins/mx/src/index.ts");

/** A log line as pino wrote it. */
export type LogLine = Record<string, unknown> & { msg?: string };

export interface Mailroom extends TestServer {
  logs: LogLine[];
  /** Messages the local route stored. */
  local(): Promise<{ to: string[]; data: string }[]>;
}

/** Makes a folder with the accept-all plugin; reuse it to restart a server on the same queue. */
export async function makeServerDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-mx-"));
  await writeFile(path.join(dir, "accept-all.ts"), ACCEPT_ALL);
  return dir;
}

/** Starts a server with the accept-all plugin and plugin-mx, resolving through `dns`. */
export async function startMailroom(options: {
  dir: string;
  dns: DnsFixture;
  clock?: Clock;
  mx?: Record<string, unknown>;
  dnsTimeout?: number;
  /** Plugin files (relative to dir) loaded after plugin-mx. */
  plugins?: string[];
  /** Plugin files loaded before the accept-all plugin, so their rcpt runs first. */
  before?: string[];
  /** Registers services in the parent container before the plugins start. */
  services?: (parent: DependencyContainer) => void;
}): Promise<Mailroom> {
  const logs: LogLine[] = [];
  const logger = pino(
    { level: "debug" },
    { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) },
  );
  const parent = container.createChildContainer();
  if (options.clock) parent.register(TOKENS.Clock, { useValue: options.clock });
  options.services?.(parent);
  const server = await startTestServer(
    {
      server: {
        hostname: "mailroom.test",
        dns: { nameservers: [options.dns.nameserver], timeout: options.dnsTimeout ?? 300 },
      },
      plugins: [
        ...(options.before ?? []).map((use) => ({ use })),
        { use: "./accept-all.ts" },
        {
          use: MX_PLUGIN,
          with: { queueDir: "./queue", allowLocalDestinations: true, retry: ["5m", "10m", "30m"], ...options.mx },
        },
        ...(options.plugins ?? []).map((use) => ({ use })),
      ],
    },
    { dir: options.dir, logger, container: parent },
  );
  return {
    ...server,
    logs,
    async local() {
      const folder = path.join(options.dir, "local");
      const names = await readdir(folder).catch(() => [] as string[]);
      const items = await Promise.all(names.sort().map((name) => readFile(path.join(folder, name), "utf8")));
      return items.map((text) => JSON.parse(text) as { to: string[]; data: string });
    },
  };
}

/** Waits until `check` returns a value other than undefined/false; bounded in time. */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  what: string,
  timeout = 10_000,
): Promise<Exclude<T, false | undefined | null>> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false && value !== null) return value as Exclude<T, false | undefined | null>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Sends one message over SMTP and returns the final reply code. */
export async function submit(server: TestServer, from: string, to: string[], body = "Subject: test\r\n\r\nhello\r\n"): Promise<number[]> {
  const client = await server.connect();
  const replies = await client.send({ from, to, message: `Message-ID: <t${Date.now()}@client.test>\r\n${body}` });
  await client.command("QUIT").catch(() => undefined);
  client.close();
  return replies.map((reply) => reply.code);
}

/** A MIME part: its headers (lower-case keys) and body. */
export interface Part {
  headers: Record<string, string>;
  body: string;
}

function splitPart(text: string): Part {
  const end = text.indexOf("\r\n\r\n");
  const head = end === -1 ? text : text.slice(0, end);
  const body = end === -1 ? "" : text.slice(end + 4);
  const headers: Record<string, string> = {};
  for (const line of head.replace(/\r\n[ \t]+/g, " ").split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] ??= line.slice(colon + 1).trim();
  }
  return { headers, body };
}

/** Reads a multipart message into its top headers and parts. */
export function parseMultipart(text: string): { headers: Record<string, string>; parts: Part[] } {
  const top = splitPart(text);
  const boundary = /boundary="?([^";]+)"?/.exec(top.headers["content-type"] ?? "")?.[1];
  if (!boundary) return { headers: top.headers, parts: [] };
  const sections = top.body.split(`--${boundary}`);
  const parts = sections
    .slice(1)
    .filter((section) => !section.startsWith("--"))
    .map((section) => splitPart(section.replace(/^\r\n/, "").replace(/\r\n$/, "")));
  return { headers: top.headers, parts };
}

/** Splits a message/delivery-status body into its field groups. */
export function statusGroups(body: string): Record<string, string>[] {
  return body
    .trim()
    .split(/\r\n\r\n/)
    .map((group) => splitPart(`${group}\r\n\r\n`).headers);
}

/** A transaction that a RawMx accepted: its commands as sent and the message bytes. */
export interface RawTransaction {
  mail: string;
  rcpt: string[];
  data: Buffer;
}

export interface RawMx {
  port: number;
  /** Every command line as received, decoded as UTF-8. */
  commands: string[];
  /** Command lines that contained octets above 127. */
  eightBitCommands: string[];
  transactions: RawTransaction[];
  close(): Promise<void>;
}

/**
 * Starts a minimal SMTP server on 127.0.0.1 port 0 that records each command
 * line exactly as it arrives, which smtp-server does not (it converts
 * A-labels to U-labels, and refuses a quoted local part with ">"). It
 * advertises SMTPUTF8 only with `smtpUtf8: true`, and 8BITMIME unless
 * `eightBitMime` is false. Like a strict server, it rejects a MAIL or RCPT
 * command with non-ASCII octets outside an SMTPUTF8 transaction
 * (553 5.6.7), and SMTPUTF8 or BODY=8BITMIME on MAIL when it does not
 * offer them (555 5.5.4).
 */
export async function startRawMx(options: { smtpUtf8: boolean; eightBitMime?: boolean }): Promise<RawMx> {
  const eightBitMime = options.eightBitMime ?? true;
  const state: RawMx = { port: 0, commands: [], eightBitCommands: [], transactions: [], close: async () => undefined };
  const listener = await listenRaw((socket) => {
    let buffer = Buffer.alloc(0);
    let inData = false;
    let current: RawTransaction | undefined;
    let utf8Transaction = false;
    const reply = (text: string) => socket.write(`${text}\r\n`);
    const command = (bytes: Buffer) => {
      const line = bytes.toString("utf8");
      state.commands.push(line);
      const eightBit = bytes.some((octet) => octet > 127);
      if (eightBit) state.eightBitCommands.push(line);
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === "EHLO") {
        const extensions = [...(eightBitMime ? ["8BITMIME"] : []), ...(options.smtpUtf8 ? ["SMTPUTF8"] : []), "ENHANCEDSTATUSCODES"];
        reply(["250-raw.test", ...extensions.map((name, index) => `250${index === extensions.length - 1 ? " " : "-"}${name}`)].join("\r\n"));
      } else if (verb === "HELO" || verb === "NOOP") {
        reply("250 2.0.0 OK");
      } else if (verb === "MAIL") {
        const requested = / SMTPUTF8(?: |$)/i.test(line);
        if (requested && !options.smtpUtf8) return reply("555 5.5.4 SMTPUTF8 is not supported");
        if (/ BODY=8BITMIME(?: |$)/i.test(line) && !eightBitMime) return reply("555 5.5.4 BODY=8BITMIME is not supported");
        if (eightBit && !requested) return reply("553 5.6.7 Non-ASCII address without SMTPUTF8");
        utf8Transaction = requested;
        current = { mail: line, rcpt: [], data: Buffer.alloc(0) };
        reply("250 2.1.0 OK");
      } else if (verb === "RCPT") {
        if (!current) return reply("503 5.5.1 MAIL first");
        if (eightBit && !utf8Transaction) return reply("553 5.6.7 Non-ASCII address without SMTPUTF8");
        current.rcpt.push(line);
        reply("250 2.1.5 OK");
      } else if (verb === "DATA") {
        if (!current || current.rcpt.length === 0) return reply("503 5.5.1 no recipients");
        inData = true;
        reply("354 go ahead");
      } else if (verb === "RSET") {
        current = undefined;
        reply("250 2.0.0 OK");
      } else if (verb === "QUIT") {
        socket.end("221 2.0.0 bye\r\n");
      } else {
        reply("502 5.5.2 unknown command");
      }
    };
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        if (inData) {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end === -1) return;
          current!.data = buffer.subarray(0, end + 2);
          state.transactions.push(current!);
          buffer = buffer.subarray(end + 5);
          inData = false;
          current = undefined;
          reply("250 2.0.0 queued");
          continue;
        }
        const end = buffer.indexOf("\r\n");
        if (end === -1) return;
        const line = buffer.subarray(0, end);
        buffer = buffer.subarray(end + 2);
        command(line);
      }
    });
    socket.write("220 raw.test ESMTP\r\n");
  });
  state.port = listener.port;
  state.close = listener.close;
  return state;
}
