import net from "node:net";
import tls from "node:tls";

/** One SMTP reply, possibly of several lines. */
export interface SmtpReply {
  code: number;
  /** Enhanced status code of the last line, when there is one. */
  enhanced: string | undefined;
  /** Text of each line, without the code and separator. */
  lines: string[];
  /** The reply as received, lines joined with "\n". */
  raw: string;
}

const REPLY_LINE = /^(\d{3})([ -])(.*)$/;
const ENHANCED = /^([245]\.\d{1,3}\.\d{1,3})(?: |$)/;

/**
 * A line-level SMTP client for tests: it writes exactly the bytes it is
 * given and parses replies as they arrive, so tests can pipeline, send bare
 * LFs or stop mid-command.
 */
export class SmtpTestClient {
  private socket: net.Socket | tls.TLSSocket;
  private buffer = "";
  private replies: SmtpReply[] = [];
  private waiters: { resolve: (reply: SmtpReply) => void; reject: (error: Error) => void }[] = [];
  private pendingLines: string[] = [];
  private ended = false;
  private endWaiters: (() => void)[] = [];
  /** The 220 greeting (or the refusal sent instead). */
  greeting!: SmtpReply;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.attach(socket);
  }

  /**
   * Connects and waits for the greeting. `proxyHeader` is written first, for
   * a server with `server.proxyProtocol` (for example
   * `PROXY TCP4 198.51.100.7 127.0.0.1 5555 25\r\n`).
   */
  static async connect(
    port: number,
    host = "127.0.0.1",
    options: { implicitTls?: boolean; proxyHeader?: string } = {},
  ): Promise<SmtpTestClient> {
    const socket = options.implicitTls
      ? tls.connect({ port, host, rejectUnauthorized: false })
      : net.connect({ port, host });
    await new Promise<void>((resolve, reject) => {
      socket.once(options.implicitTls ? "secureConnect" : "connect", () => resolve());
      socket.once("error", reject);
    });
    const client = new SmtpTestClient(socket);
    if (options.proxyHeader !== undefined) socket.write(options.proxyHeader);
    client.greeting = await client.read();
    return client;
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", () => this.onEnd());
    socket.on("close", () => this.onEnd());
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let index: number;
    while ((index = this.buffer.indexOf("\r\n")) !== -1) {
      const line = this.buffer.slice(0, index);
      this.buffer = this.buffer.slice(index + 2);
      const match = REPLY_LINE.exec(line);
      if (!match) {
        this.pendingLines = [];
        this.push({ code: 0, enhanced: undefined, lines: [line], raw: line });
        continue;
      }
      this.pendingLines.push(line);
      if (match[2] === " ") {
        const lines = this.pendingLines;
        this.pendingLines = [];
        const texts = lines.map((text) => REPLY_LINE.exec(text)![3]!);
        const enhanced = ENHANCED.exec(texts[texts.length - 1]!)?.[1];
        this.push({ code: Number(match[1]), enhanced, lines: texts, raw: lines.join("\n") });
      }
    }
  }

  private push(reply: SmtpReply): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(reply);
    else this.replies.push(reply);
  }

  private onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    for (const waiter of this.waiters.splice(0)) waiter.reject(new Error("connection closed before a reply"));
    for (const resolve of this.endWaiters.splice(0)) resolve();
  }

  /** True once the server closed the connection. */
  get isClosed(): boolean {
    return this.ended;
  }

  /** Writes raw bytes, with no line ending added. */
  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Waits for the next reply; rejects after `timeout` ms or when the connection closes. */
  read(timeout = 10_000): Promise<SmtpReply> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.ended) return Promise.reject(new Error("connection closed before a reply"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (reply: SmtpReply) => {
          clearTimeout(timer);
          resolve(reply);
        },
        reject: (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`no reply within ${timeout} ms`));
      }, timeout);
      this.waiters.push(waiter);
    });
  }

  /** Reads `count` replies in order. */
  async readMany(count: number, timeout?: number): Promise<SmtpReply[]> {
    const replies: SmtpReply[] = [];
    for (let i = 0; i < count; i++) replies.push(await this.read(timeout));
    return replies;
  }

  /** Returns true when no further reply arrives within `ms`. */
  async silentFor(ms: number): Promise<boolean> {
    try {
      await this.read(ms);
      return false;
    } catch {
      return true;
    }
  }

  /** Sends one command line (CRLF added) and returns its reply. */
  async command(line: string, timeout?: number): Promise<SmtpReply> {
    this.write(`${line}\r\n`);
    return this.read(timeout);
  }

  /** Sends DATA, the message (dot-stuffed) and the final dot; returns the reply after the dot. */
  async data(message: string | Buffer): Promise<SmtpReply> {
    const start = await this.command("DATA");
    if (start.code !== 354) return start;
    const text = Buffer.isBuffer(message) ? message.toString("latin1") : message;
    const stuffed = text.replace(/(^|\r\n)\./g, "$1..");
    const ending = stuffed.endsWith("\r\n") ? "" : "\r\n";
    this.write(Buffer.from(`${stuffed}${ending}.\r\n`, "latin1"));
    return this.read();
  }

  /** Runs EHLO, MAIL, RCPT for each recipient and DATA; returns every reply. */
  async send(options: { from: string; to: string[]; message: string; helo?: string }): Promise<SmtpReply[]> {
    const replies = [await this.command(`EHLO ${options.helo ?? "client.example"}`)];
    replies.push(await this.command(`MAIL FROM:<${options.from}>`));
    for (const to of options.to) replies.push(await this.command(`RCPT TO:<${to}>`));
    replies.push(await this.data(options.message));
    return replies;
  }

  /** Upgrades the connection after a 220 reply to STARTTLS. */
  async upgrade(options: tls.ConnectionOptions = {}): Promise<void> {
    const plain = this.socket as net.Socket;
    plain.removeAllListeners("data");
    plain.removeAllListeners("close");
    plain.removeAllListeners("error");
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, ...options });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", () => resolve());
      secure.once("error", reject);
    });
    this.socket = secure;
    this.buffer = "";
    this.attach(secure);
  }

  /** Waits until the server closes the connection. */
  closed(timeout = 10_000): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`connection still open after ${timeout} ms`)), timeout);
      this.endWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Closes the connection from the client side. */
  close(): void {
    this.socket.destroy();
  }
}
