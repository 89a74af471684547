/**
 * The only module that touches smtp-server's internals. smtp-server keeps the
 * socket, TLS (implicit and STARTTLS) and the SASL exchanges. This module
 * replaces its command reader and dispatcher: lines end only at CRLF,
 * over-long lines get a reply instead of a dropped connection, and every
 * command goes to a SessionDriver. It replaces the DATA reader too, because
 * smtp-server 3.21.6 removes a line's leading dot only when a second dot
 * follows. A line `.x` from a client that did not dot-stuff kept its dot
 * there, and DataDecoder removes it as RFC 5321 section 4.5.2 requires.
 *
 * It relies on these smtp-server 3.21 members, all checked by adapter.test.ts:
 * SMTPConnection#_setListeners, #_createParser, #_onCommand, #_onClose,
 * #_onTimeout, #_armTimeout (called with the TLS socket during STARTTLS), #_dataStream, #_nextHandler, #_upgrading, #_handlerPending, #_parser, #_ready,
 * #_resetSession, #_getEnhancedStatusCode, #send, #close, #upgrade; SMTPStream#_dataMode,
 * #isClosed, #_flushData; the SASL table's
 * SASL_PLAIN and SASL_LOGIN; SMTPServer#connect, #_handleProxy,
 * #_expectsProxyHeader, #_upgrade and options.onAuth/onSecure.
 *
 * The PROXY header is read here too, instead of by smtp-server 3.21, which
 * accepts a header without a client address (the session then belongs to
 * the proxy's own address) and replies to an invalid one with an IMAP-style
 * "* BAD" line.
 */
import type { Socket } from "node:net";
import { PassThrough, type Readable } from "node:stream";
import type { TLSSocket } from "node:tls";
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import { formatReply, oneLineReplyText } from "../replies.js";
import { newId } from "../session-state.js";
import { DataDecoder } from "./data-decoder.js";
import { PROXY_HEADER_TIMEOUT_MS, readProxyHeader, type ProxiedAddress, type ProxyHeaderFailure } from "./proxy-header.js";
import SASL from "smtp-server/lib/sasl.js";
import { SMTPConnection } from "smtp-server/lib/smtp-connection.js";
import { SMTPStream } from "smtp-server/lib/smtp-stream.js";

/** One command line as read from the socket, without its line ending. */
export interface CommandLine {
  bytes: Buffer;
  /** The line ended in a bare LF instead of CRLF. */
  bareLf: boolean;
  /** The line was longer than the reader keeps; `bytes` is empty then. */
  overflow: boolean;
}

/** A reply as wire text: code, optional enhanced code, and one or more lines. */
export interface WireReply {
  code: number;
  enhanced?: string;
  message: string | string[];
  close?: boolean;
}

export interface AuthResult {
  user?: string;
  code?: number;
  /** Enhanced status code of the failure reply, for example "5.7.8". */
  enhanced?: string;
  message?: string;
  /** Close the connection after the failure reply. */
  close?: boolean;
}

/** The engine side of one connection, as the adapter calls it. */
export interface SessionDriver {
  /** Decides whether to greet; returns a refusal reply or null for the banner. */
  ready(): Promise<WireReply | null>;
  /** Handles one command line; the next line is read after the promise settles. */
  handleLine(line: CommandLine): Promise<void>;
  /**
   * Verifies SASL credentials gathered by smtp-server. `authzid` is the
   * authorization identity of PLAIN (RFC 4616), empty when the client sent none.
   */
  authenticate(method: string, username: string, password: string, authzid: string): Promise<AuthResult>;
  /**
   * Called after smtp-server rejected a step of a SASL exchange with a 5xx
   * reply that it wrote itself: the client cancelled with `*` (RFC 4954
   * section 4) or sent a malformed response. Not called for the result of
   * authenticate(), which smtp-server writes later.
   */
  saslRejected(): void;
  /** Called when a STARTTLS handshake finished. */
  tlsEstablished(info: { cipher?: string; protocol?: string; servername?: string }): void;
  /**
   * Called when the client can send nothing more while the engine still works
   * on its last command: it ended its input after that command. The reply is
   * still written. May be called more than once, and `closed()` follows.
   */
  clientGone(): void;
  /** Called once when the socket closed. */
  closed(): void;
}

/** The operations the engine may perform on one connection's socket. */
export interface Wire {
  readonly id: string;
  reply(reply: WireReply): void;
  /** Ends the connection after the replies already written. */
  close(): void;
  /**
   * Ends the connection after the replies already written, and closes the
   * socket once they left instead of waiting for the client to close its
   * side. For QUIT, after which the client sends nothing more.
   */
  hangUp(): void;
  /** Switches the reader to DATA mode and returns the dot-unstuffed message stream. */
  startData(): Readable;
  /** Resumes command reading after the reply to DATA was sent. */
  endData(): void;
  /** Sends 220 and starts the TLS handshake; plaintext that follows is discarded. */
  startTls(): void;
  /** Runs a SASL exchange (PLAIN or LOGIN) with the given initial arguments. */
  runSasl(method: "PLAIN" | "LOGIN", args: string[]): Promise<void>;
  /** The connection is encrypted (implicit TLS or after STARTTLS). */
  readonly secure: boolean;
}

export interface ConnectionInfo {
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  secure: boolean;
}

export interface ListenerOptions {
  hostname: string;
  /** Returns the greeting text after "220 ", read at each connection so that a reload applies. */
  greeting(): string;
  implicitTls: boolean;
  tls?: { key: Buffer; cert: Buffer; sni: Map<string, { key: Buffer; cert: Buffer }> };
  proxyProtocol: boolean | string[];
  idleTimeout: number;
  /** Maximum command line length kept in memory (the AUTH limit). */
  maxLineLength: number;
  /** Past this many octets without a line end the connection is closed. */
  maxDiscard: number;
  createSession(wire: Wire, info: ConnectionInfo): SessionDriver;
  /**
   * Takes a connection slot for an implicit TLS handshake that is about to
   * start, and returns the function that gives it back, or undefined when
   * a limit is reached and the socket is to be closed without a reply.
   */
  reserveHandshake(remoteAddress: string): (() => void) | undefined;
  onError(error: Error): void;
  /** Called when a peer that must send a PROXY header sent none or an invalid one; the connection is closed. */
  onProxyHeaderRejected(peer: { remoteAddress: string; remotePort: number }, failure: ProxyHeaderFailure): void;
}

const LF = 0x0a;
const CR = 0x0d;

/**
 * Reads command lines that end in LF, marks the ones without CR, and bounds
 * the buffer. In DATA mode it decodes the message with a DataDecoder, which
 * ends it only at CRLF.CRLF, and keeps the bytes after the final dot until
 * resumeCommands().
 */
class CommandReader extends SMTPStream {
  private buffer: Buffer = Buffer.alloc(0);
  private discarding = 0;
  /** When the first bytes of the command line still unfinished arrived; 0 for none. */
  private lineStarted = 0;
  /** How long one command line may take to arrive, from its first byte; 0 for no limit. */
  lineTimeout = 0;
  onLine: (line: CommandLine, done: () => void) => void = (_line, done) => done();
  onOverflowClose: () => void = () => {};
  /** A client dribbled one line for longer than lineTimeout (a slow-send attack). */
  onSlowLineClose: () => void = () => {};
  /** The client closed its sending side and every line before that has been handled. */
  onInputEnd: () => void = () => {};
  /** The client closed its sending side; lines before that may still wait to be handled. */
  onEndOfInput: () => void = () => {};
  /** Octets of the chunk that _write is handling, which writableLength still counts. */
  private chunkInProgress = 0;
  /** The message stream of the DATA command being read; null outside DATA. */
  private message: PassThrough | null = null;
  private decoder: DataDecoder | null = null;
  /**
   * Resumes command reading after the final dot: a function once the data
   * ended, or true when resumeCommands() came first.
   */
  private resumeAfterData: (() => void) | boolean = false;

  constructor(
    /** Maximum command line length kept in memory; set from the listener options. */
    public maxLineLength: number,
    /** Past this many octets without a line end the connection is closed. */
    public maxDiscard: number,
  ) {
    super({});
  }

  // The socket's pipe calls end() when the client ended its input. STARTTLS
  // unpipes the plaintext socket first, so its end does not reach the reader.
  override end(...args: unknown[]): this {
    (super.end as (...rest: unknown[]) => this).apply(this, args);
    this.onEndOfInput();
    return this;
  }

  /** Checks whether a complete command line, or input not yet split into lines, waits behind the current one. */
  hasWaitingInput(): boolean {
    return this.buffer.indexOf(LF) !== -1 || this.writableLength > this.chunkInProgress;
  }

  override _write(chunk: Buffer, _encoding: unknown, done: (error?: Error | null) => void): void {
    this.chunkInProgress = chunk.length;
    const next = (error?: Error | null): void => {
      this.chunkInProgress = 0;
      done(error);
    };
    if (this.isClosed) return next();
    if (this._dataMode) return this.feedData(chunk, next);
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    this.readLines(next);
  }

  private readLines(next: (error?: Error | null) => void): void {
    while (true) {
      if (this.isClosed) {
        this.buffer = Buffer.alloc(0);
        return next();
      }
      if (this._dataMode) {
        const rest = this.buffer;
        this.buffer = Buffer.alloc(0);
        if (rest.length === 0) return next();
        return this.feedData(rest, next);
      }

      const end = this.buffer.indexOf(LF);
      if (end === -1) {
        // The socket's idle timer restarts at every byte, so a client sending
        // one byte at a time would never meet it. The whole line must arrive in time.
        if (this.buffer.length > 0 || this.discarding > 0) {
          const now = Date.now();
          this.lineStarted ||= now;
          if (this.lineTimeout > 0 && now - this.lineStarted > this.lineTimeout) {
            this.isClosed = true;
            this.buffer = Buffer.alloc(0);
            this.onSlowLineClose();
            return next();
          }
        }
        if (this.buffer.length > this.maxLineLength) {
          this.discarding += this.buffer.length;
          this.buffer = Buffer.alloc(0);
          if (this.discarding > this.maxDiscard) {
            this.isClosed = true;
            this.onOverflowClose();
          }
        }
        return next();
      }

      let line = this.buffer.subarray(0, end);
      this.buffer = this.buffer.subarray(end + 1);
      const endsInCR = line.length > 0 && line[line.length - 1] === CR;
      if (endsInCR) line = line.subarray(0, line.length - 1);
      const overflow = this.discarding > 0 || line.length > this.maxLineLength;
      const bareLf = !endsInCR && !overflow;
      this.discarding = 0;
      this.lineStarted = 0;

      let sync = true;
      let resumedSync = false;
      this.onLine({ bytes: overflow ? Buffer.alloc(0) : line, bareLf, overflow }, () => {
        if (sync) resumedSync = true;
        // Pipelined lines wait one event-loop turn each, so that other
        // connections run in between. Without one, the reader asks the
        // socket for more at once.
        else if (this.buffer.indexOf(LF) !== -1) setImmediate(() => this.readLines(next));
        else this.readLines(next);
      });
      sync = false;
      // A handler that finished synchronously continues the loop here.
      if (!resumedSync) return;
    }
  }

  /** Switches to DATA mode and returns the stream of the dot-unstuffed message. */
  readMessage(): Readable {
    this._dataMode = true;
    this.decoder = new DataDecoder();
    this.message = new PassThrough();
    this.resumeAfterData = false;
    return this.message;
  }

  /** Reads the commands after the final dot; call it once the reply to DATA was sent. */
  resumeCommands(): void {
    const resume = this.resumeAfterData;
    if (typeof resume === "function") {
      this.resumeAfterData = false;
      resume();
    } else {
      // The data has not ended yet, which happens when the engine gave up on
      // the message early; reading goes on once the final dot arrives.
      this.resumeAfterData = true;
    }
  }

  private feedData(chunk: Buffer, next: (error?: Error | null) => void): void {
    const message = this.message!;
    const { parts, rest } = this.decoder!.push(chunk);
    let drained = true;
    for (const part of parts) {
      // After the engine destroyed the stream, the rest of the message is read and dropped.
      if (message.writable) drained = message.write(part);
    }

    if (rest === undefined) {
      if (drained || !message.writable) return next();
      // A stream that is destroyed while full never drains, it only closes.
      const onDrain = () => {
        message.off("drain", onDrain);
        message.off("close", onDrain);
        next();
      };
      message.once("drain", onDrain);
      message.once("close", onDrain);
      return;
    }

    this._dataMode = false;
    this.message = null;
    this.decoder = null;
    if (message.writable) message.end();
    // Commands pipelined after the final dot wait for the reply to the
    // message; holding `next` keeps the socket's further bytes waiting too.
    const resume = () => {
      this.buffer = rest;
      this.readLines(next);
    };
    if (this.resumeAfterData === true) {
      this.resumeAfterData = false;
      resume();
    } else {
      this.resumeAfterData = resume;
    }
  }

  override _flushData(): void {
    // A partial line at end of input is never a command.
  }

  // Runs once every pending line got its reply, because each write's
  // callback waits for the line handlers.
  override _final(callback: (error?: Error | null) => void): void {
    this.onInputEnd();
    callback();
  }
}

/** smtp-server's connection with the command path replaced. */
class AdaptedConnection extends SMTPConnection {
  driver!: SessionDriver;
  wire!: Wire;
  options!: ListenerOptions;
  /** The reader's callback for the line being handled; undefined once it was called. */
  private pendingLine: (() => void) | undefined;
  /** A command line or SASL response is being handled, and reading waits for it. */
  private lineRunning = false;
  /** smtp-server is running a step of a SASL exchange, synchronously; see send(). */
  private inSaslStep = false;

  override init(): void {
    // No early-talker delay: the greeting goes out as soon as the connect hook allows.
    (this as unknown as Internals)._setListeners(() => void this.greet());
  }

  private async greet(): Promise<void> {
    const self = this as unknown as Internals;
    if (this.secure) {
      // Implicit TLS: the handshake finished before this connection existed.
      this.driver.tlsEstablished(tlsFacts(self._socket as TLSSocket));
    }
    let refusal: WireReply | null;
    try {
      refusal = await this.driver.ready();
    } catch (error) {
      this.options.onError(error as Error);
      refusal = { code: 421, enhanced: "4.3.0", message: "Service temporarily unavailable", close: true };
    }
    if (self._closing || self._closed) return;
    self._resetSession();
    if (refusal) {
      this.wire.reply({ ...refusal, close: true });
      return;
    }
    self._ready = true;
    this.queueOutput(`220 ${this.options.greeting()}\r\n`);
  }

  /** Reply text waiting for the end of the event-loop turn; see flushQueuedOutput. */
  private output = "";

  /** Adds reply text to write at the end of this event-loop turn. */
  queueOutput(text: string): void {
    if (!this.canWrite()) return;
    if (this.output === "") queuedConnections.push(this);
    this.output += text;
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flushQueuedOutput);
    }
  }

  /** Writes the queued reply text now. */
  flushOutput(): void {
    const text = this.output;
    if (text === "") return;
    this.output = "";
    if (this.canWrite()) (this as unknown as Internals)._socket.write(text);
  }

  /**
   * Checks that replies can reach the client. smtp-server's send() also
   * requires readyState "open", which drops replies to a client that
   * half-closed; the adapter writes to such a client too.
   */
  private canWrite(): boolean {
    const self = this as unknown as Internals;
    const socket = self._socket;
    return !self._upgrading && socket !== undefined && !socket.destroyed && socket.writable;
  }

  // smtp-server writes some replies itself (STARTTLS, SASL, its timeouts);
  // queued replies go out first so the client reads them in order.
  override send(code: number, data?: string | string[], context?: string | false): void {
    this.flushOutput();
    super.send(code, data, context);
    // smtp-server rejects a cancelled or malformed SASL response inside the
    // step. The result of onAuth is written from a promise callback, after
    // the step has returned, so it never counts here.
    if (this.inSaslStep && code >= 500) this.driver.saslRejected();
  }

  /** Runs one step of a SASL exchange (the AUTH command or a response line) with smtp-server's code. */
  runSaslStep(step: () => void): void {
    this.inSaslStep = true;
    try {
      step();
    } finally {
      this.inSaslStep = false;
    }
  }

  override close(): void {
    this.flushOutput();
    super.close();
  }

  /**
   * Closes like close(), then destroys the socket once its last bytes went to
   * the kernel. A client that resets the connection after QUIT then meets a
   * closed socket, and Node builds no ECONNRESET error with a stack for it
   * (about 8% of the CPU per message under the 1 KB load, one connection per
   * message). Unread input at that moment makes the kernel send a reset,
   * which only a client that sent commands after QUIT can meet.
   */
  hangUp(): void {
    this.close();
    const socket = (this as unknown as Internals)._socket;
    if (socket.destroyed) return;
    if (socket.writableFinished) socket.destroy();
    else socket.once("finish", () => socket.destroy());
  }

  // The base constructor calls this before `options` is set, so the limits
  // start at defaults and createListener sets them right after.
  override _createParser(): SMTPStream {
    const reader = new CommandReader(
      this.options?.maxLineLength ?? 12288,
      this.options?.maxDiscard ?? 65536,
    );
    reader.onLine = (line, done) => this.onLine(line, done);
    reader.onEndOfInput = () => {
      // With the last line still in a hook, nothing more will come: the
      // client has gone as far as the limits are concerned. Otherwise the
      // waiting lines are handled and onInputEnd closes the connection.
      if (this.lineRunning && !reader.hasWaitingInput()) this.driver.clientGone();
    };
    // The listener keeps half-open sockets, so replies still reach a client
    // that shut down its sending side; the connection closes after them.
    reader.onInputEnd = () => this.close();
    reader.onOverflowClose = () => {
      this.wire.reply({ code: 500, enhanced: "5.5.2", message: "Line too long", close: true });
    };
    reader.lineTimeout = this.options?.idleTimeout ?? 0;
    reader.onSlowLineClose = () => {
      this.wire.reply({ code: 421, enhanced: "4.4.2", message: "Command took too long to arrive, closing connection", close: true });
    };
    reader.on("error", (error: Error) => {
      this.options?.onError(error);
      this.close();
    });
    return reader;
  }

  private onLine(line: CommandLine, done: () => void): void {
    const self = this as unknown as Internals;
    // Plaintext that arrived behind STARTTLS is dropped without a reply.
    if (self._upgrading || self._closing) return done();

    if (self._nextHandler) {
      const handler = self._nextHandler;
      self._nextHandler = false;
      self._handlerPending = true;
      const text = line.overflow ? Buffer.alloc(0) : line.bytes;
      this.lineRunning = true;
      this.runSaslStep(() =>
        handler.call(this, text, () => {
          self._handlerPending = false;
          this.lineRunning = false;
          done();
        }),
      );
      return;
    }

    self._handlerPending = true;
    this.lineRunning = true;
    this.pendingLine = done;
    this.driver.handleLine(line).then(this.lineHandled, this.lineFailed);
  }

  /** Resumes reading after the current line; DATA calls it early, after 354. */
  releaseLine(): void {
    const done = this.pendingLine;
    if (!done) return;
    this.pendingLine = undefined;
    this.lineRunning = false;
    this.whenWritable(done);
  }

  // Bound once per connection, not once per line.
  private readonly lineHandled = (): void => {
    (this as unknown as Internals)._handlerPending = false;
    this.releaseLine();
  };

  private readonly lineFailed = (error: Error): void => {
    this.options.onError(error);
    this.wire.reply({ code: 451, enhanced: "4.3.0", message: "Temporary local problem, try again later" });
    this.lineHandled();
  };

  /** Waits for the socket to drain, so a client that never reads cannot grow our buffers. */
  private whenWritable(next: () => void): void {
    const socket = (this as unknown as Internals)._socket;
    if (socket.writableNeedDrain && !socket.destroyed) socket.once("drain", next);
    else next();
  }

  override _onCommand(): void {
    // Replaced by onLine; smtp-server's dispatcher must never run.
    throw new Error("smtp-server's command dispatcher was called; the adapter no longer matches this smtp-server version");
  }

  /**
   * Handles the idle timeout: 421 4.4.2 when the client owes us a command.
   * While the engine works on a command (a hook, the queue) the client is
   * waiting for us, so smtp-server re-arms the timer instead. During DATA the
   * engine's own inactivity timer (limits.dataTimeout) applies, and the
   * handler of the DATA command is pending then, so the timer is re-armed too.
   */
  override _onTimeout(): void {
    const self = this as unknown as Internals;
    if (self._closing || self._handlerPending) return super._onTimeout();
    this.wire.reply({ code: 421, enhanced: "4.4.2", message: "Idle timeout, closing connection", close: true });
  }

  /** Enhanced code for the SASL failure reply that smtp-server writes itself; see onAuth. */
  pendingEnhanced: string | undefined;

  override _getEnhancedStatusCode(code: number, context?: string | false): string {
    if (this.pendingEnhanced && context !== false) return this.pendingEnhanced;
    return super._getEnhancedStatusCode(code, context);
  }

  /**
   * smtp-server arms the idle timer on the TLS socket of a STARTTLS
   * handshake through this call, which makes it the place to watch that
   * socket. The listener keeps half-open sockets, so a client that leaves
   * in the middle of the handshake only ends the TLS socket, which then
   * never closes and held the connection's slot until the idle timeout.
   */
  override _armTimeout(socket?: import("node:net").Socket): void {
    super._armTimeout(socket);
    const self = this as unknown as Internals;
    if (!socket || socket === self._socket || !self._upgrading) return;
    socket.once("end", () => {
      if (self._upgrading && !self._closed) socket.destroy();
    });
  }

  override _onClose(): void {
    this.output = "";
    const self = this as unknown as Internals;
    const wasClosed = self._closed;
    super._onClose();
    if (!wasClosed) this.driver.closed();
  }
}

interface Internals {
  _setListeners(callback: () => void): void;
  _resetSession(): void;
  _ready: boolean;
  _closing: boolean;
  _closed: boolean;
  _upgrading: boolean;
  _handlerPending: boolean;
  _nextHandler: ((this: SMTPConnection, line: Buffer, callback: () => void) => void) | false;
  _parser: CommandReader | false;
  _dataStream: Readable | null;
  _onTimeout(): void;
  _socket: import("node:net").Socket;
  upgrade(callback: () => void, secureCallback?: () => void): void;
  session: { id: string; user?: unknown };
  tlsOptions?: { name?: string; version?: string };
  secure: boolean;
}

/**
 * Connections with queued reply text. Replies are written at the end of the
 * event-loop turn (setImmediate) instead of at once, so the replies to the
 * commands of every connection handled in one turn leave back to back. A
 * client that sleeps until its reply arrives is then woken while it is still
 * reading the previous reply rather than once per reply. In the 1 KB load
 * benchmark with 20 clients this cut CPU per message by about a tenth.
 */
const queuedConnections: AdaptedConnection[] = [];
let flushScheduled = false;

function flushQueuedOutput(): void {
  flushScheduled = false;
  // A write can run socket callbacks that queue more output; those go out
  // in the next turn.
  const connections = queuedConnections.splice(0);
  for (const connection of connections) connection.flushOutput();
}

function makeWire(connection: AdaptedConnection): Wire {
  const self = connection as unknown as Internals;
  return {
    id: connection.id,
    get secure() {
      return self.secure;
    },
    reply(reply) {
      connection.queueOutput(`${formatReply(reply)}\r\n`);
      if (reply.close || reply.code === 421) connection.close();
    },
    close() {
      connection.close();
    },
    hangUp() {
      connection.hangUp();
    },
    startData() {
      const parser = self._parser;
      if (!parser) throw new Error("connection closed before DATA");
      const stream = parser.readMessage();
      // smtp-server's close handler destroys this stream when the client goes
      // away mid-message, so the reader of the message never waits forever.
      self._dataStream = stream;
      // The reader must go on reading for the message to arrive.
      connection.releaseLine();
      return stream;
    },
    endData() {
      self._dataStream = null;
      const parser = self._parser;
      if (parser) parser.resumeCommands();
    },
    startTls() {
      connection.send(220, "2.0.0 Ready to start TLS", false);
      self.upgrade(() => {});
    },
    runSasl(method, args) {
      const mechanism = (SASL as unknown as Record<string, (this: SMTPConnection, a: string[], cb: () => void) => void>)[
        `SASL_${method}`
      ];
      if (!mechanism) throw new Error(`smtp-server has no SASL_${method}`);
      return new Promise((resolve) => connection.runSaslStep(() => mechanism.call(connection, args, resolve)));
    },
  };
}

function tlsFacts(socket: TLSSocket): { cipher?: string; protocol?: string; servername?: string } {
  return {
    cipher: socket.getCipher?.()?.name,
    protocol: socket.getProtocol?.() ?? undefined,
    servername: (socket as { servername?: string | false }).servername || undefined,
  };
}

interface ServerInternals {
  _expectsProxyHeader(socket: Socket): boolean;
  _handleProxy(socket: Socket, callback: (error: Error | null, socketOptions?: Partial<ProxiedAddress> & { id?: string }) => void): void;
  _upgrade(socket: Socket, callback: (error: Error | null, tlsSocket?: TLSSocket) => void): void;
}

/** How long a connection whose PROXY header was rejected stays open for the 421 reply to leave. */
const PROXY_REJECT_LINGER_MS = 1000;

/**
 * Replaces smtp-server's PROXY header reader for the peers that must send
 * one. A header that is missing, invalid or names no client gets a 421
 * reply and the connection is closed before a session exists, so no session
 * is ever attributed to the proxy's own address. Every connection gets its id
 * from the engine's pool (newId), and one from a peer that sends no header
 * goes on at once. smtp-server would call randomBytes for each id and wait an
 * event-loop turn, which cost about 15 µs of CPU per connection in profiles.
 */
function replaceProxyHandling(server: SMTPServer, options: ListenerOptions, clients: WeakMap<Socket, string>): void {
  const internals = server as unknown as ServerInternals;
  const timeout = Math.min(PROXY_HEADER_TIMEOUT_MS, options.idleTimeout);
  internals._handleProxy = (socket, callback) => {
    if (!internals._expectsProxyHeader(socket)) return callback(null, { id: newId() });
    // Our own timer bounds the wait for the header, so smtp-server's idle
    // timer for sockets that are not yet connections must not close it first.
    socket.setTimeout(0);
    readProxyHeader(socket, timeout, (result) => {
      if (!("reason" in result)) {
        clients.set(socket, result.remoteAddress);
        return callback(null, { ...result, id: newId() });
      }
      const peer = { remoteAddress: socket.remoteAddress ?? "", remotePort: socket.remotePort ?? 0 };
      options.onProxyHeaderRejected(peer, result);
      // Late errors of the closing socket must not reach the process as uncaught exceptions.
      socket.on("error", () => {});
      if (!result.peerLeft && socket.writable) {
        const reply = result.timedOut
          ? { code: 421, enhanced: "4.4.2", message: "PROXY header timed out, closing connection" }
          : { code: 421, enhanced: "4.7.0", message: "Invalid PROXY header, closing connection" };
        socket.end(`${formatReply(reply)}\r\n`);
        setTimeout(() => socket.destroy(), PROXY_REJECT_LINGER_MS).unref();
      } else {
        socket.destroy();
      }
      callback(new Error(`PROXY header rejected: ${result.reason}`));
    });
  };
}

/**
 * Makes each implicit TLS handshake hold a connection slot while it runs.
 * smtp-server starts the handshake before a connection exists, and the
 * engine's limits apply only from the greeting on, so a client could hold
 * any number of sockets that never finish a handshake until the idle
 * timeout. A socket over a limit is closed at once: nothing can be written
 * to it before the handshake, so it gets no 421.
 */
function limitHandshakes(server: SMTPServer, options: ListenerOptions, clients: WeakMap<Socket, string>): void {
  const internals = server as unknown as ServerInternals;
  const upgrade = internals._upgrade.bind(server);
  internals._upgrade = (socket, callback) => {
    // Behind a PROXY header the client's address is the one the header named.
    const remoteAddress = clients.get(socket) ?? socket.remoteAddress ?? "";
    const release = options.reserveHandshake(remoteAddress);
    if (!release) {
      // smtp-server's guard on the accepted socket drops it from the pending sockets when it closes.
      socket.on("error", () => {});
      socket.destroy();
      return;
    }
    // The TLS socket copies this flag. The listener keeps half-open sockets,
    // so a client that leaves in the middle of the handshake would only end
    // the TLS socket, which would then keep its slot until the idle timeout.
    socket.allowHalfOpen = false;
    upgrade(socket, (error, tlsSocket) => {
      // The session writes replies to a client that half-closed, as on the other listeners.
      if (tlsSocket) tlsSocket.allowHalfOpen = true;
      // The session takes a slot of its own when it greets.
      release();
      callback(error, tlsSocket);
    });
  };
}

/** Creates a listener whose connections are driven by the engine. */
export function createListener(options: ListenerOptions): SMTPServer {
  const connections = new Map<string, AdaptedConnection>();
  const tls = options.tls;

  const serverOptions: SMTPServerOptions = {
    name: options.hostname,
    secure: options.implicitTls,
    logger: false,
    disableReverseLookup: true,
    useProxy: options.proxyProtocol,
    socketTimeout: options.idleTimeout,
    allowHalfOpen: true,
    authMethods: ["PLAIN", "LOGIN"],
    // Replies that smtp-server writes itself (the SASL results, its timeouts)
    // carry enhanced status codes from its table: 235 2.7.0, 535 5.7.8, 454 4.7.0.
    hideENHANCEDSTATUSCODES: false,
    onSecure(socket, session, callback) {
      const connection = connections.get(session.id);
      connection?.driver.tlsEstablished(tlsFacts(socket as TLSSocket));
      callback();
    },
    onAuth(auth, session, callback) {
      const connection = connections.get(session.id);
      if (!connection) return callback(new Error("connection closed"));
      const fail = (result: AuthResult) => {
        const code = result.code ?? 535;
        // smtp-server sends the failure reply synchronously inside the callback.
        connection.pendingEnhanced = result.enhanced;
        // smtp-server 3.21.6 writes err.message as one line without a length
        // limit, so the text is cut here to the limit that formatReply applies.
        const enhanced = connection._getEnhancedStatusCode(code);
        const message = oneLineReplyText(code, enhanced || undefined, result.message ?? "Authentication credentials invalid");
        const error = Object.assign(new Error(message), { responseCode: code });
        try {
          callback(error);
        } finally {
          connection.pendingEnhanced = undefined;
        }
        if (result.close) connection.close();
      };
      connection.driver
        .authenticate(auth.method, auth.username ?? "", auth.password ?? "", auth.authzid ?? "")
        .then((result) => (result.user ? callback(null, { user: result.user }) : fail(result)))
        .catch((error: Error) => {
          options.onError(error);
          fail({ code: 454, enhanced: "4.7.0", message: "Temporary authentication failure" });
        });
    },
  };
  if (tls) {
    serverOptions.key = tls.key;
    serverOptions.cert = tls.cert;
    if (tls.sni.size) {
      serverOptions.sniOptions = Object.fromEntries(tls.sni) as SMTPServerOptions["sniOptions"];
    }
  }

  const server = new SMTPServer(serverOptions);
  server.on("error", (error: Error) => options.onError(error));
  const proxiedClients = new WeakMap<Socket, string>();
  replaceProxyHandling(server, options, proxiedClients);
  if (options.implicitTls) limitHandshakes(server, options, proxiedClients);

  server.connect = function connect(socket, socketOptions) {
    const connection = new AdaptedConnection(server, socket, socketOptions ?? undefined);
    connection.options = options;
    const self = connection as unknown as Internals;
    // The base constructor built its reader before `options` existed.
    const reader = self._parser as CommandReader;
    reader.maxLineLength = options.maxLineLength;
    reader.maxDiscard = options.maxDiscard;
    reader.lineTimeout = options.idleTimeout;
    connection.wire = makeWire(connection);
    connection.driver = options.createSession(connection.wire, {
      remoteAddress: connection.remoteAddress,
      remotePort: connection.remotePort,
      localAddress: connection.localAddress,
      localPort: connection.localPort,
      secure: connection.secure,
    });
    connections.set(connection.id, connection);
    server.connections.add(connection);
    connection.on("error", (error: Error) => options.onError(error));
    const close = connection.driver.closed.bind(connection.driver);
    connection.driver.closed = () => {
      connections.delete(connection.id);
      close();
    };
    connection.init();
  };
  return server;
}
