/**
 * Checks every smtp-server internal that adapter.ts relies on, by name and by
 * behaviour, against the installed smtp-server. When one of these fails after
 * an upgrade, adapter.ts no longer matches smtp-server: read the new source
 * before changing the test.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import net from "node:net";
import { createRequire } from "node:module";
import { PassThrough } from "node:stream";
import { SMTPServer } from "smtp-server";
import SASL from "smtp-server/lib/sasl.js";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { SMTPStream } from "smtp-server/lib/smtp-stream.js";
import { afterAll, afterEach, describe, expect, test } from "vitest";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = any;

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** A connected pair of real loopback sockets. */
async function socketPair(): Promise<{ server: net.Socket; client: net.Socket }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const port = (listener.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => listener.once("connection", resolve));
  const client = net.connect(port, "127.0.0.1");
  const server = await accepted;
  listener.close();
  cleanups.push(() => {
    client.destroy();
    server.destroy();
  });
  return { server, client };
}

/** Collects what the client side receives. */
function received(client: net.Socket): { text: () => string; waitFor: (pattern: RegExp) => Promise<string> } {
  let text = "";
  client.setEncoding("latin1");
  client.on("data", (chunk: string) => (text += chunk));
  return {
    text: () => text,
    async waitFor(pattern) {
      for (let i = 0; i < 200; i++) {
        if (pattern.test(text)) return text;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      throw new Error(`never received ${pattern}; got ${JSON.stringify(text)}`);
    },
  };
}

function newServer(options: Record<string, unknown> = {}): Loose {
  const server = new SMTPServer({ logger: false, disableReverseLookup: true, key: KEY, cert: CERT, ...options });
  return server;
}

async function newConnection(options: Record<string, unknown> = {}) {
  const server = newServer(options);
  const pair = await socketPair();
  const connection: Loose = new SMTPConnection(server, pair.server);
  return { server, connection, client: pair.client };
}

const require = createRequire(import.meta.url);
/** SMTPConnection as a base class for subclasses that watch one method. */
const Connection = SMTPConnection as unknown as new (...args: Loose[]) => Loose;

// A throwaway certificate, so smtp-server does not fall back to its built-in one.
const certDir = mkdtempSync(path.join(os.tmpdir(), "mailroom-adapter-cert-"));
execFileSync(
  "openssl",
  ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
    "-keyout", path.join(certDir, "key.pem"), "-out", path.join(certDir, "cert.pem")],
  { stdio: "ignore" },
);
const KEY = readFileSync(path.join(certDir, "key.pem"));
const CERT = readFileSync(path.join(certDir, "cert.pem"));
afterAll(() => rmSync(certDir, { recursive: true, force: true }));

describe("the installed smtp-server", () => {
  test("is exactly the version the adapter was written for", () => {
    const installed = JSON.parse(readFileSync(require.resolve("smtp-server/package.json"), "utf8")).version;
    const core = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    expect(core.dependencies["smtp-server"]).toBe(installed);
    expect(installed).toBe("3.21.6");
  });

  test.each([
    ["SMTPConnection", SMTPConnection.prototype, ["init", "_setListeners", "_createParser", "_onCommand", "_onClose", "_onTimeout", "_armTimeout", "_resetSession", "_getEnhancedStatusCode", "send", "close", "upgrade"]],
    ["SMTPStream", SMTPStream.prototype, ["_write", "_flushData"]],
    ["SASL", SASL, ["SASL_PLAIN", "SASL_LOGIN"]],
    ["SMTPServer", SMTPServer.prototype, ["connect", "listen", "close", "updateSecureContext", "_handleProxy", "_expectsProxyHeader", "_upgrade"]],
  ])("%s has the methods the adapter calls or overrides", (_owner, target, methods) => {
    for (const method of methods) {
      expect(typeof (target as Loose)[method], `${_owner}#${method}`).toBe("function");
    }
  });

  test("a new connection has the fields the adapter reads and writes", async () => {
    const { connection } = await newConnection();
    expect(connection._ready).toBe(false);
    expect(connection._upgrading).toBe(false);
    expect(connection._nextHandler).toBe(false);
    expect(connection._handlerPending).toBe(false);
    expect(connection._closing).toBe(false);
    expect(connection._closed).toBe(false);
    expect(connection._dataStream).toBeFalsy();
    expect(connection._parser).toBeInstanceOf(SMTPStream);
    expect(connection._socket).toBeInstanceOf(net.Socket);
    expect(connection.session.id).toBe(connection.id);
    expect(connection.secure).toBe(false);
    expect(connection.remoteAddress).toBe("127.0.0.1");
    expect(typeof connection.remotePort).toBe("number");
    expect(connection.localAddress).toBe("127.0.0.1");
    expect(typeof connection.localPort).toBe("number");
  });

  test("a stream has the data-mode fields the adapter reads", () => {
    const stream: Loose = new SMTPStream({});
    expect(stream._dataMode).toBe(false);
    expect(stream.isClosed).toBe(false);
  });
});

describe("SMTPConnection behaves as the adapter assumes", () => {
  test("the constructor builds its parser with _createParser, and upgrade() does again", async () => {
    let built = 0;
    class Counting extends Connection {
      _createParser() {
        built += 1;
        return super._createParser();
      }
    }
    const server = newServer({ onSecure: (_s: unknown, _session: unknown, callback: () => void) => callback() });
    const pair = await socketPair();
    const connection: Loose = new Counting(server, pair.server);
    expect(built).toBe(1);
    connection.upgrade(() => {});
    expect(built).toBe(2);
    expect(connection._upgrading).toBe(true);
  });

  test("_setListeners pipes the socket into _parser and calls back at once", async () => {
    const { connection, client } = await newConnection();
    const chunks: Buffer[] = [];
    const sink: Loose = new SMTPStream({});
    sink._write = (chunk: Buffer, _encoding: unknown, next: () => void) => {
      chunks.push(chunk);
      next();
    };
    connection._parser = sink;
    let called = false;
    connection._setListeners(() => (called = true));
    expect(called).toBe(true);
    client.write("NOOP\r\n");
    for (let i = 0; i < 100 && chunks.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(Buffer.concat(chunks).toString()).toBe("NOOP\r\n");
  });

  test("send() with context false writes one plain line; a multi-line reply uses dashes", async () => {
    const { connection, client } = await newConnection();
    const wire = received(client);
    connection.send(250, "2.1.0 Sender OK", false);
    connection.send(250, ["first", "last"], false);
    expect(await wire.waitFor(/last\r\n/)).toBe("250 2.1.0 Sender OK\r\n250-first\r\n250 last\r\n");
  });

  test("send(421) closes the connection by itself", async () => {
    const { connection, client } = await newConnection();
    const wire = received(client);
    const ended = new Promise((resolve) => client.once("end", resolve));
    connection.send(421, "4.7.0 Bye", false);
    await ended;
    expect(wire.text()).toBe("421 4.7.0 Bye\r\n");
    expect(connection._closing).toBe(true);
  });

  test("close() marks the connection closing and the parser closed, and ends the socket", async () => {
    const { connection, client } = await newConnection();
    connection._setListeners(() => {});
    const ended = new Promise((resolve) => client.once("end", resolve));
    connection.close();
    expect(connection._closing).toBe(true);
    expect(connection._parser.isClosed).toBe(true);
    await ended;
  });

  test("_onClose() marks the connection closed and destroys an unfinished _dataStream", async () => {
    const { connection } = await newConnection();
    const stream = new PassThrough();
    let failure: Error | undefined;
    stream.on("error", (error) => (failure = error));
    connection._dataStream = stream;
    connection._onClose();
    expect(connection._closed).toBe(true);
    expect(connection._parser).toBe(false);
    expect(stream.destroyed).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(failure).toBeInstanceOf(Error);
  });

  test("_onClose() runs once the client closes the socket", async () => {
    let closes = 0;
    class Watching extends Connection {
      _onClose() {
        closes += 1;
        super._onClose();
      }
    }
    const pair = await socketPair();
    const connection: Loose = new Watching(newServer(), pair.server);
    connection._setListeners(() => {});
    pair.client.destroy();
    for (let i = 0; i < 100 && closes === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(closes).toBe(1);
    expect(connection._closed).toBe(true);
  });

  test("_onTimeout() waits while a handler is pending and sends 421 otherwise", async () => {
    const { connection, client } = await newConnection({ socketTimeout: 50 });
    const wire = received(client);
    connection._handlerPending = true;
    connection._onTimeout();
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(wire.text()).toBe("");
    connection._handlerPending = false;
    connection._onTimeout();
    expect(await wire.waitFor(/\r\n/)).toMatch(/^421 /);
  });

  test("_armTimeout() arms the socket's idle timeout with the server's socketTimeout", async () => {
    const { connection } = await newConnection({ socketTimeout: 1234 });
    connection._armTimeout();
    expect(connection._socket.timeout).toBe(1234);
  });

  test("_resetSession() gives the session a fresh envelope", async () => {
    const { connection } = await newConnection();
    connection._resetSession();
    expect(connection.session.envelope).toMatchObject({ mailFrom: false, rcptTo: [] });
  });

  test("upgrade() secures and re-pipes the socket", async () => {
    const tls = await import("node:tls");
    let secured = false;
    const server = newServer({
      onSecure(_socket: unknown, _session: unknown, callback: () => void) {
        secured = true;
        callback();
      },
    });
    const pair = await socketPair();
    const connection: Loose = new SMTPConnection(server, pair.server);
    connection._setListeners(() => {});
    connection.upgrade(() => {});
    const secure = tls.connect({ socket: pair.client, rejectUnauthorized: false });
    cleanups.push(() => secure.destroy());
    await new Promise((resolve) => secure.once("secureConnect", resolve));
    for (let i = 0; i < 100 && !secured; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(secured).toBe(true);
    expect(connection.secure).toBe(true);
    expect(connection._upgrading).toBe(false);
    expect(connection._socket).toBeInstanceOf(tls.TLSSocket);
  });
});

describe("SMTPStream behaves as the adapter assumes", () => {
  test("_flushData runs at stream end", () => {
    const stream: Loose = new SMTPStream({});
    let flushed = false;
    stream._flushData = () => (flushed = true);
    stream._write = (_chunk: Buffer, _encoding: unknown, next: () => void) => next();
    stream.end(Buffer.from("partial"));
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        expect(flushed).toBe(true);
        resolve();
      }),
    );
  });
});

describe("SASL and the server hooks behave as the adapter assumes", () => {
  test("SASL_PLAIN with an initial response calls the server's onAuth and replies 235", async () => {
    let seen: Loose;
    const { connection, client } = await newConnection({
      onAuth(auth: Loose, _session: unknown, callback: (error: Error | null, result?: { user: string }) => void) {
        seen = auth;
        callback(null, { user: "u" });
      },
    });
    connection._resetSession();
    const wire = received(client);
    const token = Buffer.from("\0u\0p").toString("base64");
    await new Promise<void>((resolve) => (SASL as Loose).SASL_PLAIN.call(connection, [token], resolve));
    expect(seen).toMatchObject({ method: "PLAIN", username: "u", password: "p" });
    expect(await wire.waitFor(/\r\n/)).toMatch(/^235 /);
    expect(connection.session.user).toBe("u");
  });

  test("SASL_LOGIN without arguments sets _nextHandler, which takes each line as a Buffer", async () => {
    let seen: Loose;
    const { connection, client } = await newConnection({
      onAuth(auth: Loose, _session: unknown, callback: (error: Error | null, result?: { user: string }) => void) {
        seen = auth;
        callback(Object.assign(new Error("Invalid"), { responseCode: 535 }));
      },
    });
    connection._resetSession();
    const wire = received(client);
    await new Promise<void>((resolve) => (SASL as Loose).SASL_LOGIN.call(connection, [], resolve));
    expect(await wire.waitFor(/\r\n/)).toMatch(/^334 /);
    for (const value of ["u", "p"]) {
      const handler = connection._nextHandler;
      expect(typeof handler).toBe("function");
      connection._nextHandler = false;
      await new Promise<void>((resolve) => handler.call(connection, Buffer.from(Buffer.from(value).toString("base64")), resolve));
    }
    expect(seen).toMatchObject({ method: "LOGIN", username: "u", password: "p" });
    expect(await wire.waitFor(/^535 /m)).toMatch(/535 /);
  });

  test("SMTPServer reads a PROXY header with _handleProxy and passes its result to connect()", async () => {
    const server = newServer({ useProxy: true });
    const handled: net.Socket[] = [];
    server._handleProxy = (socket: net.Socket, callback: (error: Error | null, options?: object) => void) => {
      handled.push(socket);
      callback(null, { remoteAddress: "192.0.2.7", remotePort: 7 });
    };
    const connected: Loose[] = [];
    server.connect = (socket: net.Socket, socketOptions: Loose) => {
      connected.push(socketOptions);
      socket.end();
    };
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => server.close());
    const client = net.connect(server.server.address().port, "127.0.0.1");
    cleanups.push(() => client.destroy());
    await new Promise((resolve) => client.once("close", resolve));
    expect(handled).toHaveLength(1);
    expect(connected).toEqual([{ remoteAddress: "192.0.2.7", remotePort: 7 }]);
  });

  test("SMTPServer skips connect() when _handleProxy calls back with an error", async () => {
    const server = newServer({ useProxy: true });
    server._handleProxy = (socket: net.Socket, callback: (error: Error | null) => void) => {
      socket.destroy();
      callback(new Error("rejected"));
    };
    let connects = 0;
    server.connect = () => (connects += 1);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => server.close());
    const client = net.connect(server.server.address().port, "127.0.0.1");
    cleanups.push(() => client.destroy());
    await new Promise((resolve) => client.once("close", resolve));
    expect(connects).toBe(0);
  });

  test.each([
    [true, true],
    [["127.0.0.1"], true],
    [["192.0.2.1"], false],
    [false, false],
  ])("_expectsProxyHeader with useProxy %j is %s for a 127.0.0.1 peer", async (useProxy, expected) => {
    const server = newServer({ useProxy });
    const pair = await socketPair();
    expect(server._expectsProxyHeader(pair.server)).toBe(expected);
  });

  test("SMTPConnection takes the client's address from socketOptions and makes its own id", async () => {
    const pair = await socketPair();
    const connection: Loose = new SMTPConnection(newServer(), pair.server, { remoteAddress: "2001:db8::7", remotePort: 7 } as Loose);
    expect(connection.remoteAddress).toBe("2001:db8::7");
    expect(connection.remotePort).toBe(7);
    expect(typeof connection.id).toBe("string");
    expect(connection.id.length).toBeGreaterThan(0);
  });

  test("SMTPServer hands every accepted socket to connect()", async () => {
    const server = newServer();
    const accepted: net.Socket[] = [];
    server.connect = (socket: net.Socket) => {
      accepted.push(socket);
      socket.end();
    };
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => server.close());
    const client = net.connect(server.server.address().port, "127.0.0.1");
    cleanups.push(() => client.destroy());
    await new Promise((resolve) => client.once("close", resolve));
    expect(accepted).toHaveLength(1);
  });
});
