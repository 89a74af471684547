import type { Logger } from "pino";
import type { Answer } from "./answers.js";
import type { ListenerConfig, ServerConfig } from "./config/schema.js";
import type { HookArgs, SessionHookName } from "./hooks.js";
import type { HookOutcome, HookRunner, LogTarget } from "./plugins/runner.js";
import { formatReply, replyFor, replyForOutcome, type Reply } from "./replies.js";
import { receiveMessage, runDataHook } from "./data.js";
import { runRcpt } from "./recipients.js";
import { MessageVerdict } from "./store-routes.js";
import type { MemoryBudget } from "./message/spool.js";
import { Connection, Transaction } from "./session-state.js";
import type { AuthResult, CommandLine, ConnectionInfo, SessionDriver, Wire } from "./smtp/adapter.js";
import {
  parseParameters,
  parsePath,
  splitPathArgument,
  type Parameters,
} from "./smtp/address.js";

/** The server-wide facts a session needs. */
export interface SessionEnvironment {
  config: ServerConfig;
  listener: ListenerConfig;
  /** The plugin set this session uses from its first to its last hook call. */
  runner: HookRunner;
  logger: Logger;
  /** True when a TLS certificate is configured, so STARTTLS is offered. */
  tlsAvailable: boolean;
  spoolDir: string;
  memory: MemoryBudget;
  /** Checks the connection limits; returns a refusal or null. */
  admit(remoteAddress: string): Reply | null;
  /**
   * Gives back the slot that `admit` took. Called once, as soon as the client
   * has gone, which may be before the hook in progress and the disconnect
   * hooks finished.
   */
  release(remoteAddress: string): void;
  /**
   * Called once when the session ended: after the disconnect hooks, and
   * after the hook calls of the greeting, command or AUTH exchange that was
   * in progress when the client went.
   */
  ended(): void;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

const SYNTAX = {
  helo: "Syntax: HELO hostname",
  ehlo: "Syntax: EHLO hostname",
  mail: "Syntax: MAIL FROM:<address> [parameters]",
  rcpt: "Syntax: RCPT TO:<address> [parameters]",
};

/** The reply that closes a connection once it has made limits.maxErrors protocol errors. */
const TOO_MANY_ERRORS = { code: 421, enhanced: "4.7.0", message: "Too many errors, closing connection", close: true };

/** A HELO argument: a domain name or an address literal, printable and without spaces. */
const HELO_NAME = /^(?:\[[\x21-\x5a\x5e-\x7e]+\]|[\x21-\x7e]+)$/;
/** RFC 3461 xtext: printable ASCII except "+" and "=", which are written as "+" and two hex digits. */
const XTEXT = /^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+$/;

/**
 * Drives one SMTP session: parses each command line, enforces the command
 * order, fires the hooks and turns their answers into replies.
 */
export class Session implements SessionDriver {
  readonly connection: Connection;
  private errors = 0;
  private utf8 = false;
  private closedOnce = false;
  private gone = false;
  private busy = false;
  private shuttingDown = false;
  private goodbyeSent = false;
  /** A DATA transfer or the hooks after it are in progress. */
  private inData = false;
  /** The decision on the message of the DATA in progress, which the shutdown deadline may reject. */
  private verdict: MessageVerdict | undefined;
  /** `server.shutdownTimeout` has passed. */
  private timedOut = false;
  /** The greeting, commands and AUTH exchanges in progress, which may still call hooks. */
  private running = 0;
  /** The reset and disconnect hooks after the connection closed have run. */
  private disconnected = false;
  private endedOnce = false;

  constructor(
    private readonly wire: Wire,
    info: ConnectionInfo,
    private readonly env: SessionEnvironment,
  ) {
    this.connection = new Connection({ ...info, logger: env.logger });
  }

  private get limits() {
    return this.env.config.limits;
  }

  private send(reply: Reply | { code: number; enhanced?: string; message: string | string[]; close?: boolean }): void {
    this.wire.reply(reply);
    if (this.connection.logs("trace")) {
      this.connection.logger.trace({ reply: formatReply(reply) }, "reply");
    }
  }

  /** Fires a hook and returns the reply its outcome calls for (null: go on). */
  private hook<H extends SessionHookName>(
    hook: H,
    args: HookArgs[H],
    logger: LogTarget = this.connection,
  ): Promise<{ reply: Reply | null; answer: Answer | undefined; outcome: HookOutcome }> {
    return this.env.runner.run(hook, args, logger).then((outcome) => ({
      reply: replyForOutcome(hook, outcome),
      answer: outcome.kind === "answer" ? outcome.answer : undefined,
      outcome,
    }));
  }

  async ready(): Promise<Reply | null> {
    // A client that left during the reverse DNS lookup would otherwise take a slot that nothing releases.
    if (this.gone) return { code: 421, enhanced: "4.4.2", message: "Connection closed", close: true };
    const refusal = this.env.admit(this.connection.remoteAddress);
    if (refusal) {
      if (this.connection.logs("info")) {
        this.connection.logger.info({ remote: this.connection.remoteAddress, code: refusal.code }, "connection refused by limit");
      }
      return refusal;
    }
    if (this.connection.logs("info")) {
      this.connection.logger.info(
        { remote: this.connection.remoteAddress, port: this.connection.remotePort, tls: this.connection.tls.secure },
        "connection opened",
      );
    }
    this.running += 1;
    try {
      const { reply } = await this.hook("connect", { connection: this.connection });
      return reply;
    } finally {
      this.doneRunning();
    }
  }

  /** Ends a greeting, command or AUTH exchange; the session ends only when none runs. */
  private doneRunning(): void {
    this.running -= 1;
    this.endIfDone();
  }

  /** Counts a protocol error; past the limit the connection is closed with 421. */
  private protocolError(reply: Reply): void {
    if (!this.countError()) return this.send(reply);
    this.send({ ...reply, close: false });
    this.send(TOO_MANY_ERRORS);
  }

  /** Counts a protocol error and returns true when the count has reached limits.maxErrors. */
  private countError(): boolean {
    this.errors += 1;
    return this.errors >= this.limits.maxErrors;
  }

  /**
   * Counts a SASL response that smtp-server rejected with its own 5xx reply
   * (a cancelled exchange, a malformed token) like any other protocol error,
   * so a client cannot repeat one without limit. A rejection by the auth
   * hook (535) is not counted: plugin-auth-file limits those with its
   * maxFailures, and counting them here too could close the connection
   * before that limit.
   */
  saslRejected(): void {
    if (this.countError()) this.send(TOO_MANY_ERRORS);
  }

  /**
   * Ends the session for a server shutdown. An idle session is closed at
   * once. A session with an open transaction may finish it (RCPT, DATA and
   * the reply after the message, or RSET) and is closed when it ends. Any
   * other session is closed after the reply to the command in progress.
   */
  shutdown(): void {
    this.shuttingDown = true;
    if (!this.busy && !this.connection.transaction) this.sayGoodbye();
  }

  /**
   * Closes the session when `server.shutdownTimeout` has passed, whatever it
   * is doing, and logs the connection and the transaction it cuts. A
   * message in DATA is rejected first, so that queue handlers already
   * called see `accepted` resolve false, and remove their copies, before
   * the client reads 421 and sends the message again. A message that every
   * route already stored is not cut: it gets its reply, then the 421.
   */
  shutdownTimedOut(): void {
    if (this.closedOnce || this.goodbyeSent) return;
    this.timedOut = true;
    if (this.verdict && !this.verdict.reject()) return;
    const transaction = this.connection.transaction;
    this.connection.logger.warn(
      {
        remote: this.connection.remoteAddress,
        txn: transaction?.id,
        sender: transaction ? transaction.sender?.address ?? "" : undefined,
        recipients: transaction?.recipients.length,
        inData: this.inData,
      },
      transaction
        ? "shutdownTimeout passed; closing the connection with its transaction unfinished"
        : "shutdownTimeout passed; closing the connection while a command was in progress",
    );
    this.sayGoodbye();
  }

  /**
   * Logs, when the server stops without waiting any longer, that this
   * session's hooks still run and its plugins are closed under them.
   */
  shutdownAbandoned(): void {
    this.connection.logger.warn(
      {
        remote: this.connection.remoteAddress,
        txn: this.connection.transaction?.id,
        inData: this.inData,
        clientConnected: !this.closedOnce,
      },
      "connection still running hooks when the server stopped; its plugins are closed anyway",
    );
  }

  private sayGoodbye(): void {
    if (this.goodbyeSent) return;
    this.goodbyeSent = true;
    this.send({ code: 421, enhanced: "4.3.2", message: "Server shutting down", close: true });
  }

  async handleLine(line: CommandLine): Promise<void> {
    this.busy = true;
    this.running += 1;
    try {
      await this.dispatch(line);
    } finally {
      this.busy = false;
      this.running -= 1;
      // An open transaction may go on to its end; the goodbye follows the reply that ends it.
      if (this.shuttingDown && !this.closedOnce && !this.connection.transaction) this.sayGoodbye();
      this.endIfDone();
    }
  }

  private dispatch(line: CommandLine): Promise<void> | void {
    if (line.overflow) {
      return this.protocolError({ code: 500, enhanced: "5.5.2", message: "Line too long" });
    }
    if (line.bareLf) {
      return this.protocolError({ code: 500, enhanced: "5.5.2", message: "Line must end with CRLF" });
    }

    let text: string;
    try {
      text = decoder.decode(line.bytes);
    } catch {
      return this.protocolError({ code: 500, enhanced: "5.5.2", message: "Invalid UTF-8 in command" });
    }
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(text)) {
      return this.protocolError({ code: 500, enhanced: "5.5.2", message: "Control character in command" });
    }

    const space = text.indexOf(" ");
    const verb = (space === -1 ? text : text.slice(0, space)).toUpperCase();
    const argument = space === -1 ? "" : text.slice(space + 1);
    const isAuth = verb === "AUTH";
    // RFC 5321 section 4.5.3.1.4 counts the command line with its CRLF.
    if (!isAuth && line.bytes.length + 2 > this.limits.maxCommandLength) {
      return this.protocolError({ code: 500, enhanced: "5.5.2", message: "Line too long" });
    }

    switch (verb) {
      case "HELO":
      case "EHLO":
        return this.helo(verb, argument);
      case "MAIL":
        return this.mail(argument);
      case "RCPT":
        return this.rcpt(argument);
      case "DATA":
        return this.data(argument);
      case "RSET":
        return this.rset(argument);
      case "NOOP":
        return this.send({ code: 250, enhanced: "2.0.0", message: "OK" });
      case "QUIT":
        this.send({ code: 221, enhanced: "2.0.0", message: "Bye" });
        return this.wire.hangUp();
      case "HELP":
        return this.send({
          code: 214,
          enhanced: "2.0.0",
          message: `Commands: ${this.commandList()}`,
        });
      case "VRFY":
      case "EXPN":
        return this.verify(verb, argument.trim());
      case "STARTTLS":
        return this.startTls(argument);
      case "AUTH":
        return this.auth(argument);
      default:
        return this.unknown(verb, argument);
    }
  }

  private async helo(verb: "HELO" | "EHLO", argument: string): Promise<void> {
    const name = argument.trim();
    if (!name || name.includes(" ") || !HELO_NAME.test(name)) {
      return this.protocolError({ code: 501, message: verb === "HELO" ? SYNTAX.helo : SYNTAX.ehlo });
    }
    const hook = verb === "HELO" ? "helo" : "ehlo";
    const { reply } = await this.hook(hook, { connection: this.connection, name });
    if (reply) return this.send(reply);

    await this.endTransaction();
    this.connection.heloName = name;
    this.connection.heloVerb = verb;
    const greeting = `${this.env.config.hostname} Hello ${name}`;
    if (verb === "HELO") return this.send({ code: 250, message: greeting });
    this.send({ code: 250, message: [greeting, ...this.extensions()] });
  }

  /** Lists the commands for HELP: STARTTLS and AUTH only where they are offered. */
  private commandList(): string {
    const commands = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP"];
    if (this.env.tlsAvailable && !this.wire.secure) commands.push("STARTTLS");
    if (this.authOffered() && !this.connection.user && this.connection.heloVerb !== "HELO") commands.push("AUTH");
    return commands.join(" ");
  }

  private authOffered(): boolean {
    return (
      this.env.runner.handles("auth") &&
      (this.wire.secure || this.env.config.allowInsecureAuth)
    );
  }

  private extensions(): string[] {
    const list = [
      "PIPELINING",
      `SIZE ${this.limits.maxMessageSize}`,
      "8BITMIME",
      "SMTPUTF8",
      "ENHANCEDSTATUSCODES",
    ];
    if (this.env.tlsAvailable && !this.wire.secure) list.push("STARTTLS");
    if (this.authOffered() && !this.connection.user) list.push("AUTH PLAIN LOGIN");
    list.push("HELP");
    return list;
  }

  private parseMailParameters(text: string): { params: Parameters } | { reply: Reply } {
    const parsed = parseParameters(text);
    if (!parsed.ok) return { reply: { code: 501, enhanced: "5.5.4", message: parsed.reason } };
    const params = parsed.params;
    for (const [key, value] of Object.entries(params)) {
      if (key === "SIZE") {
        if (value === true || !/^\d{1,20}$/.test(value)) {
          return { reply: { code: 501, enhanced: "5.5.4", message: "Invalid SIZE value" } };
        }
        if (Number(value) > this.limits.maxMessageSize) {
          return { reply: { code: 552, enhanced: "5.3.4", message: `Message size exceeds the limit of ${this.limits.maxMessageSize} octets` } };
        }
      } else if (key === "BODY") {
        if (value === true || !/^(7BIT|8BITMIME)$/i.test(value)) {
          return { reply: { code: 501, enhanced: "5.5.4", message: "BODY must be 7BIT or 8BITMIME" } };
        }
      } else if (key === "SMTPUTF8") {
        if (value !== true) return { reply: { code: 501, enhanced: "5.5.4", message: "SMTPUTF8 takes no value" } };
      } else if (key === "AUTH" && (this.authOffered() || this.connection.user !== undefined)) {
        // RFC 4954: the original submitter as xtext, or <>. It is accepted and
        // not used: relaying it would need trust in the client's assertion.
        if (value === true || !XTEXT.test(value)) {
          return { reply: { code: 501, enhanced: "5.5.4", message: "AUTH must be an xtext mailbox or <>" } };
        }
      } else {
        return { reply: { code: 555, enhanced: "5.5.4", message: `Unsupported parameter ${key}` } };
      }
    }
    return { params };
  }

  private async mail(argument: string): Promise<void> {
    if (!this.connection.heloName) {
      return this.protocolError({ code: 503, enhanced: "5.5.1", message: "Send HELO or EHLO first" });
    }
    if (this.env.listener.requireAuth && !this.connection.user) {
      return this.send({ code: 530, enhanced: "5.7.0", message: "Authentication required" });
    }
    if (this.connection.transaction) {
      return this.protocolError({ code: 503, enhanced: "5.5.1", message: "Nested MAIL command" });
    }
    // No new transaction starts once the server is shutting down.
    if (this.shuttingDown) return this.sayGoodbye();
    const match = /^FROM:/i.exec(argument);
    const split = match ? splitPathArgument(argument.slice(5)) : null;
    if (!split) return this.protocolError({ code: 501, enhanced: "5.5.4", message: SYNTAX.mail });

    const parameters = this.parseMailParameters(split.rest);
    if ("reply" in parameters) return this.protocolError(parameters.reply);
    const utf8 = parameters.params.SMTPUTF8 === true;

    const address = parsePath(split.path, { sender: true, utf8 });
    if (address && "error" in address) {
      return this.protocolError({ code: 501, enhanced: "5.1.7", message: `Invalid sender address: ${address.error}` });
    }

    const transaction = new Transaction(this.connection, address, parameters.params);
    const { reply } = await this.hook(
      "mail",
      { connection: this.connection, transaction, address, params: parameters.params },
      transaction,
    );
    if (reply && reply.code >= 400) return this.send(reply);

    this.utf8 = utf8;
    this.connection.transaction = transaction;
    this.send(reply ?? { code: 250, enhanced: "2.1.0", message: "Sender OK" });
  }

  private async rcpt(argument: string): Promise<void> {
    const transaction = this.connection.transaction;
    if (!transaction) {
      return this.protocolError({ code: 503, enhanced: "5.5.1", message: "Send MAIL first" });
    }
    const match = /^TO:/i.exec(argument);
    const split = match ? splitPathArgument(argument.slice(3)) : null;
    if (!split) return this.protocolError({ code: 501, enhanced: "5.5.4", message: SYNTAX.rcpt });

    const parsed = parseParameters(split.rest);
    if (!parsed.ok) return this.protocolError({ code: 501, enhanced: "5.5.4", message: parsed.reason });
    const unsupported = Object.keys(parsed.params)[0];
    if (unsupported) {
      return this.protocolError({ code: 555, enhanced: "5.5.4", message: `Unsupported parameter ${unsupported}` });
    }

    const address = parsePath(split.path, { sender: false, utf8: this.utf8 });
    if (!address || "error" in address) {
      const reason = address ? address.error : "empty recipient";
      return this.protocolError({ code: 501, enhanced: "5.1.3", message: `Invalid recipient address: ${reason}` });
    }
    const { reply } = await runRcpt({
      runner: this.env.runner,
      connection: this.connection,
      transaction,
      address,
      params: parsed.params,
      maxRecipients: this.limits.maxRecipients,
    });
    this.send(reply);
  }

  private async data(argument: string): Promise<void> {
    const transaction = this.connection.transaction;
    if (argument.trim() !== "") {
      return this.protocolError({ code: 501, enhanced: "5.5.4", message: "DATA takes no arguments" });
    }
    if (!transaction) {
      return this.protocolError({ code: 503, enhanced: "5.5.1", message: "Send MAIL first" });
    }
    const { reply } = await runDataHook({ connection: this.connection, transaction, runner: this.env.runner });
    if (reply) return this.send(reply);

    this.inData = true;
    const verdict = new MessageVerdict();
    this.verdict = verdict;
    const final = await receiveMessage({
      wire: this.wire,
      connection: this.connection,
      transaction,
      runner: this.env.runner,
      config: this.env.config,
      spoolDir: this.env.spoolDir,
      memory: this.env.memory,
      utf8: this.utf8,
      verdict,
    }).finally(() => {
      this.inData = false;
      this.verdict = undefined;
    });
    // A message cut at the shutdown deadline already got its 421.
    if (!this.goodbyeSent) this.send(final);
    if (this.timedOut) this.sayGoodbye();
    this.connection.transactionCount += 1;
    await this.endTransaction();
    this.wire.endData();
  }

  private async rset(argument: string): Promise<void> {
    if (argument.trim() !== "") {
      return this.protocolError({ code: 501, enhanced: "5.5.4", message: "RSET takes no arguments" });
    }
    await this.endTransaction();
    this.send({ code: 250, enhanced: "2.0.0", message: "OK" });
  }

  private async verify(verb: "VRFY" | "EXPN", argument: string): Promise<void> {
    if (argument === "") {
      return this.protocolError({ code: 501, enhanced: "5.5.4", message: `Syntax: ${verb} address` });
    }
    // A port for authenticated submission reveals no user names before AUTH.
    if (this.env.listener.requireAuth && !this.connection.user) {
      return this.send({ code: 530, enhanced: "5.7.0", message: "Authentication required" });
    }
    const hook = verb === "VRFY" ? "vrfy" : "expn";
    const { reply } = await this.hook(hook, { connection: this.connection, argument });
    const final = reply ?? replyFor(hook, undefined)!;
    if (final.code === 550 && final.enhanced === "5.1.1") this.connection.failedLookups += 1;
    this.send(final);
  }

  private async startTls(argument: string): Promise<void> {
    if (!this.env.tlsAvailable) {
      return this.protocolError({ code: 502, enhanced: "5.5.1", message: "STARTTLS not available" });
    }
    if (argument.trim() !== "") {
      return this.protocolError({ code: 501, enhanced: "5.5.4", message: "STARTTLS takes no arguments" });
    }
    if (this.wire.secure) {
      return this.protocolError({ code: 503, enhanced: "5.5.1", message: "TLS already active" });
    }
    await this.endTransaction();
    this.wire.startTls();
  }

  tlsEstablished(info: { cipher?: string; protocol?: string; servername?: string }): void {
    // RFC 3207 section 4.2: forget everything learned before the handshake.
    const connection = this.connection;
    connection.tls = { secure: true, ...info };
    connection.heloName = undefined;
    connection.heloVerb = undefined;
    connection.user = undefined;
    connection.transaction = undefined;
    connection.logger.info({ cipher: info.cipher, protocol: info.protocol }, "tls established");
  }

  private async auth(argument: string): Promise<void> {
    const [mechanism = "", ...rest] = argument.trim().split(/ +/);
    const method = mechanism.toUpperCase();
    // AUTH is an ESMTP extension that only the EHLO reply offers, and RFC
    // 3848's protocol names in the Received header (ESMTPA, ESMTPSA) need EHLO.
    if (this.connection.heloVerb !== "EHLO") {
      return this.protocolError({ code: 503, enhanced: "5.5.1", message: "Send EHLO first" });
    }
    if (!this.env.runner.handles("auth")) {
      return this.protocolError({ code: 502, enhanced: "5.5.1", message: "AUTH not available" });
    }
    if (!this.authOffered()) {
      return this.send({ code: 538, enhanced: "5.7.11", message: "Encryption required for AUTH" });
    }
    if (this.connection.user) {
      return this.protocolError({ code: 503, enhanced: "5.5.1", message: "Already authenticated" });
    }
    if (this.connection.transaction) {
      return this.protocolError({ code: 503, enhanced: "5.5.1", message: "AUTH not allowed during a mail transaction" });
    }
    if (method !== "PLAIN" && method !== "LOGIN") {
      return this.protocolError({ code: 504, enhanced: "5.5.4", message: "Unsupported authentication mechanism" });
    }
    await this.wire.runSasl(method, rest);
  }

  async authenticate(method: string, username: string, password: string, authzid: string): Promise<AuthResult> {
    // Mailroom has no proxy authorization, so a client may act only as the
    // user it authenticates as (RFC 4616 section 2). smtp-server takes the
    // authzid as the user name when the authcid is empty, and that case matches.
    if (authzid !== "" && authzid !== username) {
      this.connection.logger.info({ user: username, authzid, method }, "authentication failed: authorization identity differs from the user");
      return { code: 535, enhanced: "5.7.8", message: "Authorization identity must be empty or the user name" };
    }
    this.running += 1;
    let hooked;
    try {
      hooked = await this.hook("auth", { connection: this.connection, method, username, password });
    } finally {
      this.doneRunning();
    }
    const { reply, answer } = hooked;
    if (answer?.verdict === "OK") {
      this.connection.user = answer.user ?? username;
      this.connection.logger.info({ user: this.connection.user, method }, "authenticated");
      return { user: this.connection.user };
    }
    this.connection.logger.info({ user: username, method, code: reply?.code }, "authentication failed");
    const final = reply ?? replyFor("auth", undefined)!;
    return { code: final.code, enhanced: final.enhanced, message: final.message, close: final.close === true };
  }

  private async unknown(verb: string, argument: string): Promise<void> {
    const { reply } = await this.hook("unknown_command", { connection: this.connection, verb, argument });
    const final = reply ?? replyFor("unknown_command", undefined)!;
    if (final.code >= 500) return this.protocolError(final);
    this.send(final);
  }

  /** Ends the open transaction, if any, and fires reset. */
  private async endTransaction(): Promise<void> {
    const transaction = this.connection.transaction;
    if (!transaction) return;
    this.connection.transaction = undefined;
    this.utf8 = false;
    await this.env.runner.runAll("reset", { connection: this.connection, transaction }, transaction);
  }

  /**
   * Marks the client as gone: aborts `connection.signal` and releases the
   * connection's slot at once, so a client that hangs up while a hook runs
   * (a password check, a failure delay) no longer counts against the limits.
   */
  clientGone(): void {
    if (this.gone) return;
    this.gone = true;
    this.connection.markGone();
    this.env.release(this.connection.remoteAddress);
  }

  closed(): void {
    if (this.closedOnce) return;
    this.closedOnce = true;
    this.clientGone();
    const connection = this.connection;
    void this.endTransaction()
      .then(() => this.env.runner.runAll("disconnect", { connection }, connection))
      .finally(() => {
        this.disconnected = true;
        this.endIfDone();
      });
  }

  /**
   * Ends the session once the disconnect hooks ran and no greeting, command
   * or AUTH exchange is still calling hooks, so that its plugins are closed
   * (after a reload or at shutdown) only when none of their hooks runs for it.
   */
  private endIfDone(): void {
    if (!this.disconnected || this.running > 0 || this.endedOnce) return;
    this.endedOnce = true;
    this.env.ended();
    const connection = this.connection;
    if (!connection.logs("info")) return;
    connection.logger.info(
      {
        remote: connection.remoteAddress,
        helo: connection.heloName,
        user: connection.user,
        tls: connection.tls.secure,
        transactions: connection.transactionCount,
        errors: this.errors,
        ms: Date.now() - connection.startedAt,
      },
      "connection closed",
    );
  }
}
