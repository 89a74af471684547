/**
 * Protocol fuzzing against a live server: random command sequences with
 * hostile arguments, bare CR and LF, NUL bytes, huge lines, pipelined bursts
 * and abrupt closes. A small model of the wire (command lines end at LF, DATA
 * ends only at CRLF.CRLF) says how many replies each write must produce; the
 * server must send exactly those, or close the connection, and must go on
 * serving other clients normally.
 *
 * `npm test` runs a short pass; MAILROOM_FUZZ_RUNS=N runs N sequences.
 */
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { startTestServer, type SmtpTestClient, type TestServer } from "@mailroom/testing";
import { afterAll, beforeAll, expect, test } from "vitest";

const RUNS = Number(process.env.MAILROOM_FUZZ_RUNS ?? 0) || 40;
const LONG = Boolean(process.env.MAILROOM_FUZZ_RUNS);
const REPLY_TIMEOUT = 5000;

const PLUGIN = `
import { definePlugin, deny, ok } from "@mailroom/core";
export default definePlugin({
  name: "fuzz-sink",
  setup(context) {
    context.registerRoute("fuzz-sink");
    return {
      rcpt: ({ address }) =>
        address.domain === "local.example" && address.local === "bob"
          ? ok({ route: "fuzz-sink" })
          : deny({ code: 550, enhanced: "5.1.1", message: "No such user here" }),
      auth: ({ username, password }) => (username === "u" && password === "p" ? ok() : undefined),
      async queue({ message }) {
        for await (const chunk of message.storedCopy()) void chunk;
        return ok();
      },
    };
  },
});
`;

let server: TestServer;
let dir: string;
let spoolDir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-fuzz-"));
  spoolDir = path.join(dir, "spool");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(spoolDir);
  await writeFile(path.join(dir, "fuzz-sink.ts"), PLUGIN);
  server = await startTestServer(
    {
      server: {
        hostname: "mx.local.example",
        allowInsecureAuth: true,
        spoolDir,
        limits: { maxMessageSize: 65536, maxErrors: 30, maxDataLineLength: 4096 },
      },
      plugins: [{ use: "./fuzz-sink.ts" }],
    },
    { dir },
  );
});

afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** One thing the fuzzer does to the connection. */
type Step =
  | { kind: "bytes"; bytes: Buffer }
  | { kind: "burst"; lines: Buffer[] }
  | { kind: "close" };

const hostile = fc.constantFrom(
  ..."aZ09 <>@\":\\.,=-_[]".split(""),
  "\u0000",
  "\r",
  "\n",
  "\t",
  "é",
  "\u00ff",
  "\u{1F600}",
);
const junk = fc.string({ unit: hostile, maxLength: 40 });
const verb = fc.constantFrom(
  "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "HELP",
  "VRFY", "EXPN", "STARTTLS", "AUTH", "BDAT", "mail", "XYZZY", "",
);
const goodArgument = fc.constantFrom(
  "client.example",
  "FROM:<a@sender.example>",
  "FROM:<> SIZE=100 BODY=8BITMIME",
  "FROM:<a@sender.example> SIZE=999999999",
  "FROM:<a@sender.example> SMTPUTF8",
  'FROM:<"x y>z"@sender.example>',
  "TO:<bob@local.example>",
  "TO:<nobody@local.example>",
  "TO:<postmaster>",
  "TO:<@hop.example:bob@local.example>",
  "PLAIN AHUAcA==",
  "PLAIN",
  "LOGIN",
  "*",
  "dQ==",
  "cA==",
);
const argument = fc.oneof({ weight: 3, arbitrary: goodArgument }, { weight: 2, arbitrary: junk });
const ending = fc.constantFrom("\r\n", "\r\n", "\r\n", "\n", "\r", "");
const command = fc
  .tuple(verb, argument, ending)
  .map(([name, arg, end]) => Buffer.from(`${name}${arg ? ` ${arg}` : ""}${end}`, "utf8"));
const validFlow = fc.constant(
  Buffer.from("EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<bob@local.example>\r\nDATA\r\n"),
);
const body = fc
  .tuple(junk, fc.constantFrom("\r\n.\r\n", "\n.\n", "\r.\r", ".\r\n", "\r\n..\r\n", "\r\n"))
  .map(([text, end]) => Buffer.from(text + end, "utf8"));
/** Long lines: under the command reader's limit, or far beyond its discard limit. */
const huge = fc
  .tuple(
    fc.oneof(fc.integer({ min: 500, max: 10_000 }), fc.integer({ min: 200_000, max: 1_048_576 })),
    fc.constantFrom("\r\n", ""),
    fc.constantFrom("A", "\u0000", "\r"),
  )
  .map(([length, end, fill]) => Buffer.concat([Buffer.from("NOOP "), Buffer.alloc(length, fill), Buffer.from(end)]));
const burst = fc
  .array(fc.tuple(fc.constantFrom("NOOP", "RSET", "HELP", "MAIL", "RCPT", "VRFY", "EHLO"), argument), {
    minLength: 2,
    maxLength: 20,
  })
  .map((commands) =>
    commands.map(([name, arg]) =>
      Buffer.from(`${name} ${arg.replace(/[\r\n]/g, "")}\r\n`, "utf8"),
    ),
  );

/** Shows a step briefly: long runs of one byte are shortened, so a failure report stays readable. */
function describe(bytes: Buffer): string {
  const text = bytes.toString("latin1");
  return text.length < 200 ? JSON.stringify(text) : `${JSON.stringify(text.slice(0, 40))}...(${text.length} octets)...${JSON.stringify(text.slice(-20))}`;
}

function shown(current: Step): Step {
  const text =
    current.kind === "close" ? "close" : current.kind === "burst" ? `burst ${current.lines.map(describe).join(" ")}` : describe(current.bytes);
  return Object.assign(current, { [fc.toStringMethod]: () => text });
}

const anyStep: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: command.map((bytes) => ({ kind: "bytes" as const, bytes })) },
  { weight: 2, arbitrary: validFlow.map((bytes) => ({ kind: "bytes" as const, bytes })) },
  { weight: 3, arbitrary: body.map((bytes) => ({ kind: "bytes" as const, bytes })) },
  { weight: 1, arbitrary: huge.map((bytes) => ({ kind: "bytes" as const, bytes })) },
  { weight: 2, arbitrary: burst.map((lines) => ({ kind: "burst" as const, lines })) },
  { weight: 1, arbitrary: fc.constant({ kind: "close" as const }) },
);
const step = anyStep.map(shown);

const LF = 0x0a;
const END_OF_DATA = Buffer.from("\r\n.\r\n");
/** Partial lines up to this size are refused with a reply when their LF comes. */
const SURE_REPLY = 64 * 1024;
/** Partial lines beyond this size always end the connection. */
const SURE_CLOSE = 64 * 1024 + 12288 + 1024;

/** Tracks what the server must do with the bytes the client writes. */
class WireModel {
  mode: "command" | "data" = "command";
  partial = 0;
  /** The last bytes of the message so far, to find CRLF.CRLF across writes. */
  tail = Buffer.from("\r\n");
  ended = false;
  replies = 0;

  constructor(private readonly client: SmtpTestClient) {}

  private async reply(): Promise<void> {
    const reply = await this.client.read(REPLY_TIMEOUT);
    this.replies += 1;
    expect(reply.code, `malformed reply ${JSON.stringify(reply.raw)}`).toBeGreaterThanOrEqual(200);
    expect(reply.code).toBeLessThan(600);
    if (reply.code === 221 || reply.code === 421) return this.expectClose();
    if (reply.code === 354) {
      this.mode = "data";
      this.tail = Buffer.from("\r\n");
    }
  }

  private async expectClose(): Promise<void> {
    await this.client.closed(REPLY_TIMEOUT);
    this.ended = true;
  }

  /** Writes bytes in order, waiting for each reply the model predicts. */
  async feed(input: Buffer): Promise<void> {
    let bytes = input;
    while (bytes.length > 0 && !this.ended) {
      if (this.client.isClosed) return this.expectClose();
      if (this.mode === "data") {
        const joined = Buffer.concat([this.tail, bytes]);
        const found = joined.indexOf(END_OF_DATA);
        if (found === -1) {
          this.client.write(bytes);
          this.tail = joined.subarray(Math.max(0, joined.length - 4));
          return;
        }
        const cut = found + END_OF_DATA.length - this.tail.length;
        this.client.write(bytes.subarray(0, cut));
        bytes = bytes.subarray(cut);
        this.mode = "command";
        await this.reply();
        continue;
      }
      const lf = bytes.indexOf(LF);
      const piece = lf === -1 ? bytes : bytes.subarray(0, lf + 1);
      this.client.write(piece);
      bytes = bytes.subarray(piece.length);
      const length = this.partial + piece.length;
      if (lf === -1) {
        this.partial = length;
        if (length > SURE_CLOSE) return this.closeAfterOverflow();
        continue;
      }
      this.partial = 0;
      if (length > SURE_CLOSE) return this.closeAfterOverflow();
      if (length > SURE_REPLY) {
        // Either the reply to the line or the overflow close, depending on timing.
        await this.reply().catch(() => this.expectClose());
        continue;
      }
      await this.reply();
    }
  }

  private async closeAfterOverflow(): Promise<void> {
    try {
      const reply = await this.client.read(REPLY_TIMEOUT);
      expect([500, 421]).toContain(reply.code);
    } catch {
      // Closed without a reply: the refusal was lost with the socket.
    }
    await this.expectClose();
  }

  /** Pipelines complete command lines in one write; each gets one reply. */
  async burst(lines: Buffer[]): Promise<void> {
    if (this.ended) return;
    if (this.mode === "data") return this.feed(Buffer.concat(lines));
    if (this.partial > 0) return this.feed(Buffer.concat(lines));
    this.client.write(Buffer.concat(lines));
    for (let i = 0; i < lines.length && !this.ended; i++) await this.reply();
  }

  /** Leaves the connection in a known state and checks no reply is left over. */
  async finish(): Promise<void> {
    if (this.ended) return;
    if (this.mode === "data") await this.feed(END_OF_DATA);
    else if (this.partial > 0) await this.feed(Buffer.from("\r\n"));
    if (this.ended) return;
    this.client.write("QUIT\r\n");
    const reply = await this.client.read(REPLY_TIMEOUT);
    // A 421 for too many errors may come before the QUIT is read.
    expect([221, 421], `reply to QUIT: ${reply.raw}`).toContain(reply.code);
    await this.expectClose();
  }
}

async function servedNormally(): Promise<void> {
  const client = await server.connect();
  const replies = await client.send({
    from: "a@sender.example",
    to: ["bob@local.example"],
    message: "Subject: after the fuzz\r\n\r\nstill fine\r\n",
  });
  expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250, 250]);
  client.close();
}

test(
  "random command sequences get one reply per command or a close, and the server stays up",
  async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: LONG ? 40 : 15 }), async (steps) => {
        const client = await server.connect();
        const model = new WireModel(client);
        try {
          for (const current of steps) {
            if (model.ended) break;
            if (current.kind === "close") {
              client.close();
              model.ended = true;
            } else if (current.kind === "burst") {
              await model.burst(current.lines);
            } else {
              await model.feed(current.bytes);
            }
          }
          await model.finish();
        } finally {
          client.close();
        }
        await servedNormally();
      }),
      {
        numRuns: RUNS,
        endOnFailure: true,
        // To replay a failure: MAILROOM_FUZZ_SEED and MAILROOM_FUZZ_PATH from its report.
        ...(process.env.MAILROOM_FUZZ_SEED ? { seed: Number(process.env.MAILROOM_FUZZ_SEED) } : {}),
        ...(process.env.MAILROOM_FUZZ_PATH ? { path: process.env.MAILROOM_FUZZ_PATH } : {}),
      },
    );

    // Every message in flight was cleaned up, including those cut off mid-DATA.
    let left: string[] = [];
    for (let i = 0; i < 100; i++) {
      left = await readdir(spoolDir);
      if (left.length === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(left).toEqual([]);
  },
  LONG ? 3_600_000 : 60_000,
);

test("pipelined bursts from many clients at once are all answered in order", async () => {
  const clients = await Promise.all(Array.from({ length: 20 }, () => server.connect()));
  await Promise.all(
    clients.map(async (client, index) => {
      const lines = ["EHLO c.example", "MAIL FROM:<a@sender.example>"];
      for (let i = 0; i < 10; i++) lines.push(i % 2 ? "RCPT TO:<bob@local.example>" : "RCPT TO:<x@local.example>");
      lines.push("RSET", `NOOP ${index}`);
      client.write(lines.map((line) => `${line}\r\n`).join(""));
      const replies = await client.readMany(lines.length);
      const codes = replies.map((reply) => reply.code);
      expect(codes).toEqual([250, 250, ...Array.from({ length: 10 }, (_, i) => (i % 2 ? 250 : 550)), 250, 250]);
      client.close();
    }),
  );
  await servedNormally();
});
