// Faults on the far side of plugin-mx: a mail exchanger that resets the
// connection mid-DATA, stalls after 354, sends a RCPT reply that never ends
// or breaks the TLS handshake, and a DNS server that sends truncated or
// mismatched answers. Each message is
// deferred, never lost, and delivered exactly once when the fault is gone.
import { rm } from "node:fs/promises";
import DNS from "dns2";
import { afterEach, describe, expect, test } from "vitest";
import { TOKENS, type OutboundQueue } from "@mailroom/core";
import { listenRaw, makeServerDir, startMailroom, submit, TestClock, waitFor, type DnsFixture } from "./mx-kit.js";
import { report } from "./fault-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

type MxMode = "accept" | "reset-mid-data" | "stall-after-354" | "trickle-rcpt-reply" | "broken-tls";

/** A hand-written SMTP server whose behaviour the test switches. */
interface ScriptedMx {
  port: number;
  mode: MxMode;
  connections: number;
  received: { to: string[]; data: string }[];
  close(): Promise<void>;
}

async function startScriptedMx(mode: MxMode): Promise<ScriptedMx> {
  const state: ScriptedMx = { port: 0, mode, connections: 0, received: [], close: async () => undefined };
  const listener = await listenRaw((socket) => {
    state.connections += 1;
    let buffer = "";
    let inData = false;
    let to: string[] = [];
    socket.write("220 remote.test ESMTP\r\n");
    socket.on("data", (chunk: Buffer) => {
      buffer += chunk.toString("latin1");
      // Bounded: each pass consumes a line or the message.
      for (let guard = 0; guard < 10_000; guard++) {
        if (inData) {
          if (state.mode === "reset-mid-data") return void socket.resetAndDestroy();
          if (state.mode === "stall-after-354") return void (buffer = "");
          const end = buffer.indexOf("\r\n.\r\n");
          if (end === -1) return;
          state.received.push({ to, data: buffer.slice(0, end + 2) });
          buffer = buffer.slice(end + 5);
          inData = false;
          to = [];
          socket.write("250 2.0.0 queued\r\n");
          continue;
        }
        const index = buffer.indexOf("\r\n");
        if (index === -1) return;
        const line = buffer.slice(0, index);
        buffer = buffer.slice(index + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO") {
          const tls = state.mode === "broken-tls" ? "250-STARTTLS\r\n" : "";
          socket.write(`250-remote.test\r\n${tls}250 8BITMIME\r\n`);
        } else if (verb === "STAR") {
          // Agrees, then answers the ClientHello with bytes that are no TLS record.
          socket.write("220 2.0.0 go ahead\r\n");
          socket.once("data", () => socket.end("this is not TLS\r\n"));
          return;
        } else if (verb === "RCPT" && state.mode === "trickle-rcpt-reply") {
          // One more line of a reply that never ends, every 200 ms, until the client leaves.
          const timer = setInterval(() => socket.write("250-2.1.5 still checking\r\n"), 200);
          socket.on("close", () => clearInterval(timer));
          return;
        } else if (verb === "RCPT") {
          to.push(/<([^>]*)>/.exec(line)?.[1] ?? "");
          socket.write("250 2.1.5 ok\r\n");
        } else if (verb === "DATA") {
          inData = true;
          socket.write("354 go on\r\n");
        } else if (verb === "QUIT") {
          socket.end("221 2.0.0 bye\r\n");
          return;
        } else {
          socket.write("250 2.0.0 ok\r\n");
        }
      }
    });
  });
  state.port = listener.port;
  state.close = listener.close;
  return state;
}

type DnsMode = "good" | "truncated" | "wrong-id" | "other-question" | "foreign-answer";

type Handler = DNS.DnsHandler;
type Request = Parameters<Handler>[0];
type Send = Parameters<Handler>[1];

/**
 * Starts a dns2 server on 127.0.0.1 for ok.test, whose UDP answers the test
 * spoils. With `tcp`, whole answers are also served over TCP on the same port.
 */
async function startSpoiledDns(options: { tcp?: boolean } = {}): Promise<DnsFixture & { mode: DnsMode }> {
  const { Packet } = DNS;
  const fixture = {
    mode: "good" as DnsMode,
    port: 0,
    nameserver: "",
    queries: [] as { name: string; type: string }[],
    close: async () => undefined as void,
  };
  const answer = (mode: DnsMode, request: Request, send: Send) => {
    const question = request.questions[0]!;
    const name = question.name.toLowerCase().replace(/\.$/, "");
    fixture.queries.push({ name, type: String(question.type) });
    const response = Packet.createResponseFromRequest(request);
    const base = { name: question.name, class: Packet.CLASS.IN, ttl: 60 };
    if (name === "ok.test" && question.type === Packet.TYPE.MX) {
      if (mode === "truncated") {
        // The TC bit with no answers: the client must not take this as "no MX".
        response.header.tc = 1;
        return send(response);
      }
      if (mode === "wrong-id") response.header.id = (request.header.id + 1) & 0xffff;
      if (mode === "other-question") response.questions[0] = { ...question, name: "other.test" };
      const owner = mode === "foreign-answer" ? "evil.test" : question.name;
      const exchange = mode === "foreign-answer" ? "mx.evil.test" : "mx.ok.test";
      response.answers.push({ ...base, name: owner, type: Packet.TYPE.MX, priority: 10, exchange } as never);
    } else if (name === "ok.test" || name === "mx.ok.test" || name === "mx.evil.test") {
      // The domain's own address would be the implicit MX: also 127.0.0.1.
      if (question.type === Packet.TYPE.A) response.answers.push({ ...base, type: Packet.TYPE.A, address: "127.0.0.1" } as never);
    } else {
      response.header.rcode = Packet.RCODE.NXDOMAIN;
    }
    send(response);
  };
  // UDP and TCP have separate port spaces, so a free UDP port may be taken
  // for TCP. The loop tries fresh ports until one is free for both.
  for (let attempt = 1; ; attempt++) {
    const server = DNS.createServer({ udp: true, handle: (request, send) => answer(fixture.mode, request, send) });
    const addresses = await server.listen({ udp: { port: 0, address: "127.0.0.1" } });
    const port = (addresses as { udp: { port: number } }).udp.port;
    const tcp = options.tcp ? DNS.createServer({ tcp: true, handle: (request, send) => answer("good", request, send) }) : undefined;
    try {
      await tcp?.listen({ tcp: { port, address: "127.0.0.1" } });
    } catch (error) {
      await server.close();
      if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE" || attempt === 10) throw error;
      continue;
    }
    fixture.port = port;
    fixture.nameserver = `127.0.0.1:${port}`;
    fixture.close = () => Promise.all([server.close(), tcp?.close()]).then(() => undefined);
    break;
  }
  return fixture;
}

async function world(options: { mx: ScriptedMx; dns?: DnsMode; dnsTcp?: boolean; settings?: Record<string, unknown> }) {
  const dns = await startSpoiledDns({ tcp: options.dnsTcp });
  dns.mode = options.dns ?? "good";
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const clock = new TestClock();
  const server = await startMailroom({
    dir,
    dns,
    clock,
    mx: { port: options.mx.port, timeouts: { connect: 1000, greeting: 1000, socket: 600 }, ...options.settings },
  });
  cleanup.push(() => server.stop());
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  return { dns, server, queue, clock };
}

/** Sends one message and waits until its first attempt was deferred. */
async function sendAndExpectDeferral(setup: Awaited<ReturnType<typeof world>>) {
  const codes = await submit(setup.server, "alice@local.test", ["bob@ok.test"], "X-Test-Id: remote\r\nSubject: t\r\n\r\nbody\r\n");
  expect(codes.at(-1)).toBe(250);
  const [entry] = await waitFor(async () => {
    const entries = await setup.queue.list();
    return entries.length === 1 && entries[0]!.attempts >= 1 && entries;
  }, "a deferred attempt");
  expect(entry!.recipients).toEqual(["bob@ok.test"]);
  // Deferred, not bounced: nothing came back to the sender.
  expect(await setup.server.local()).toHaveLength(0);
  return entry!;
}

/** Clears the fault, lets the retry run and checks the single delivery. */
async function expectDeliveredOnceAfterRepair(setup: Awaited<ReturnType<typeof world>>, mx: ScriptedMx) {
  mx.mode = "accept";
  setup.dns.mode = "good";
  setup.clock.advance(6 * 60_000);
  await waitFor(() => mx.received.length === 1, "the retry's delivery");
  await waitFor(async () => (await setup.queue.list()).length === 0, "an empty queue");
  setup.clock.advance(24 * 3600_000);
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(mx.received).toHaveLength(1);
  expect(mx.received[0]!.to).toEqual(["bob@ok.test"]);
  expect(mx.received[0]!.data).toMatch(/^X-Test-Id: remote$/m);
  expect(await setup.server.local()).toHaveLength(0);
}

const tried: string[] = [];

describe("a remote mail exchanger that fails", () => {
  test.each(["reset-mid-data", "stall-after-354", "trickle-rcpt-reply"] as const)("%s: deferred, then delivered once", async (mode) => {
    const mx = await startScriptedMx(mode);
    cleanup.push(() => mx.close());
    const setup = await world({ mx });
    const entry = await sendAndExpectDeferral(setup);
    expect(entry.lastError).toMatch(/mx\.ok\.test/);
    expect(mx.received).toHaveLength(0);
    await expectDeliveredOnceAfterRepair(setup, mx);
    tried.push(mode);
  });

  test("broken TLS falls back when optional", async () => {
    const mx = await startScriptedMx("broken-tls");
    cleanup.push(() => mx.close());
    const setup = await world({ mx });
    await submit(setup.server, "alice@local.test", ["bob@ok.test"], "X-Test-Id: remote\r\n\r\nbody\r\n");
    await waitFor(() => mx.received.length === 1, "plaintext delivery");
    await waitFor(async () => (await setup.queue.list()).length === 0, "an empty queue");
    expect(mx.connections).toBe(2);
    expect(mx.received).toHaveLength(1);
    tried.push("broken TLS, optional");
  });

  test("broken TLS defers when required", async () => {
    const mx = await startScriptedMx("broken-tls");
    cleanup.push(() => mx.close());
    const setup = await world({ mx, settings: { tls: { requireFor: ["ok.test"] } } });
    const entry = await sendAndExpectDeferral(setup);
    expect(entry.lastError).toMatch(/TLS|SSL|wrong version|certificate|socket|closed/i);
    expect(mx.connections).toBe(1);
    expect(mx.received).toHaveLength(0);
    tried.push("broken TLS, required");
  });
});

describe("a DNS server that spoils its answers", () => {
  test("truncated UDP answer is retried over TCP", async () => {
    const mx = await startScriptedMx("accept");
    cleanup.push(() => mx.close());
    const setup = await world({ mx, dns: "truncated", dnsTcp: true });
    const codes = await submit(setup.server, "alice@local.test", ["bob@ok.test"], "X-Test-Id: remote\r\n\r\nbody\r\n");
    expect(codes.at(-1)).toBe(250);
    await waitFor(() => mx.received.length === 1, "delivery after the TCP retry");
    await waitFor(async () => (await setup.queue.list()).length === 0, "an empty queue");
    expect(mx.received).toHaveLength(1);
    tried.push("DNS truncated, whole over TCP");
  });

  test.each(["truncated", "wrong-id", "other-question", "foreign-answer"] as const)(
    "%s answer: deferred, then delivered once",
    async (mode) => {
      const mx = await startScriptedMx("accept");
      cleanup.push(() => mx.close());
      const setup = await world({ mx, dns: mode });
      const entry = await sendAndExpectDeferral(setup);
      expect(entry.lastError).toMatch(/DNS|MX|ok\.test/);
      expect(mx.connections).toBe(0);
      await expectDeliveredOnceAfterRepair(setup, mx);
      tried.push(`DNS ${mode}`);
      if (mode === "foreign-answer") {
        report("remote side faults for plugin-mx", {
          load: "one message per case through the outbound queue, retried after the fault is gone",
          faults: "connection reset mid-DATA, stall after 354, a broken STARTTLS handshake, DNS answers truncated (with and without a TCP answer), with the wrong id, for another question or with records of another name",
          inputs: `${tried.length} cases: ${tried.join("; ")}`,
          lost: 0,
        });
      }
    },
  );
});
