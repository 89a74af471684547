/** Shared pieces of the relay and vrfy end-to-end tests. */
import path from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { pino, type Logger } from "pino";
import { SMTPServer } from "smtp-server";

const fixturesDir = path.dirname(fileURLToPath(import.meta.url));

/** Paths for `use:` in a test config. */
export const PLUGINS = {
  relay: path.resolve(fixturesDir, "../src/index.ts"),
  vrfy: path.resolve(fixturesDir, "../../vrfy/src/index.ts"),
  mailboxes: path.join(fixturesDir, "mailbox-plugin.ts"),
  forward: path.join(fixturesDir, "forward-plugin.ts"),
};

/** Returns the PROXY v1 header that makes a connection come from `address`. */
export function proxyFrom(address: string): string {
  return address.includes(":")
    ? `PROXY TCP6 ${address} ::1 5555 25\r\n`
    : `PROXY TCP4 ${address} 127.0.0.1 5555 25\r\n`;
}

/** A message as the sink received it. */
export interface SinkMessage {
  from: string;
  to: string[];
  data: string;
}

/** An SMTP server on loopback standing in for a remote domain's MX. */
export interface Sink {
  port: number;
  /** Number of TCP connections the sink accepted. */
  connections: number;
  messages: SinkMessage[];
  close(): Promise<void>;
}

export async function startSink(): Promise<Sink> {
  const sink: Sink = {
    port: 0,
    connections: 0,
    messages: [],
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = new SMTPServer({
    logger: false,
    authOptional: true,
    disabledCommands: ["STARTTLS", "AUTH"],
    onConnect(_session, callback) {
      sink.connections += 1;
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        sink.messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((rcpt) => rcpt.address),
          data: Buffer.concat(chunks).toString("utf8"),
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  sink.port = (server.server.address() as { port: number }).port;
  return sink;
}

/** Creates a pino logger that keeps every entry, so tests can check what was logged. */
export function recordingLogger(): { logger: Logger; entries: Record<string, unknown>[] } {
  const entries: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim()) entries.push(JSON.parse(line) as Record<string, unknown>);
      }
      callback();
    },
  });
  return { logger: pino({ level: "info" }, stream), entries };
}
