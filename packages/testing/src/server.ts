import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { MailroomServer, type BoundAddress, type DependencyContainer } from "@mailroom/core";
import { pino, type Logger } from "pino";
import { parse, stringify } from "yaml";
import { SmtpTestClient } from "./client.js";

export interface TestServerOptions {
  /** Folder that relative paths resolve against; a new temporary folder by default. */
  dir?: string;
  /** A logger; silent by default (set MAILROOM_TEST_LOG=debug to see the logs). */
  logger?: Logger;
  /** A parent container, to provide services before the plugins start. */
  container?: DependencyContainer;
}

/** A server started for a test, with its folder and address. */
export interface TestServer {
  server: MailroomServer;
  host: string;
  port: number;
  addresses: BoundAddress[];
  /** The folder that relative config paths resolve against. */
  dir: string;
  /** Opens a raw client connection and reads the greeting. */
  connect(options?: { implicitTls?: boolean; port?: number; proxyHeader?: string }): Promise<SmtpTestClient>;
  /** Stops the server and deletes the folder it created. */
  stop(): Promise<void>;
}

/**
 * Starts a real server on 127.0.0.1 with a free port. `config` is YAML text
 * or an object in the config file's shape; `server.listen` defaults to
 * 127.0.0.1:0.
 */
export async function startTestServer(
  config: string | Record<string, unknown>,
  options: TestServerOptions = {},
): Promise<TestServer> {
  const ownsDir = !options.dir;
  const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), "mailroom-test-")));
  const object = typeof config === "string" ? undefined : structuredClone(config);
  if (object) {
    const server = (object.server ??= {}) as Record<string, unknown>;
    server.listen ??= ["127.0.0.1:0"];
  }
  const text = typeof config === "string" ? config : stringify(object);
  const logger = options.logger ?? pino({ level: process.env.MAILROOM_TEST_LOG ?? "silent" });

  const server = await MailroomServer.fromText(text, dir, {
    logger,
    // The text stays as written, so that config errors name its own lines.
    ...(typeof config === "string" && !setsListen(config) ? { listen: ["127.0.0.1:0"] } : {}),
    ...(options.container ? { container: options.container } : {}),
  });
  const addresses = await server.listen();
  const first = addresses[0]!;
  return {
    server,
    host: first.host,
    port: first.port,
    addresses,
    dir,
    connect: (connectOptions = {}) =>
      SmtpTestClient.connect(connectOptions.port ?? first.port, first.host, connectOptions),
    async stop() {
      await server.close();
      if (ownsDir) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Returns true when YAML config text sets `server.listen`; text that does not parse is left to the server to report. */
function setsListen(text: string): boolean {
  let parsed: unknown;
  try {
    parsed = parse(text);
  } catch {
    return true;
  }
  const server = (parsed as { server?: unknown } | null)?.server;
  return typeof server === "object" && server !== null && "listen" in server;
}
