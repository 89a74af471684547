import DNS from "dns2";
import { afterEach, expect, test } from "vitest";
import { Dns2Resolver, DnsTemporaryError, type NameServer } from "./dns.js";

type Handler = (request: DNS.Packet, send: (response: DNS.Packet) => unknown) => void;

const servers: { close(): Promise<unknown> }[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

/** Starts a dns2 UDP server on 127.0.0.1 port 0 that records the questions. */
async function serve(handle: Handler) {
  const queries: string[] = [];
  const server = DNS.createServer({
    udp: true,
    handle: (request: DNS.Packet, send: (response: DNS.Packet) => unknown) => {
      queries.push(`${request.questions[0]!.name} ${request.questions[0]!.type}`);
      handle(request, send);
    },
  } as never);
  const listening = await server.listen({ udp: { port: 0, address: "127.0.0.1" } });
  servers.push(server);
  const address = (listening as { udp: { port: number } }).udp;
  return { server: { host: "127.0.0.1", port: address.port } satisfies NameServer, queries };
}

/**
 * Starts a TCP server on a free port, then a UDP server on the same port
 * number, as the retry over TCP needs. A port whose UDP side is taken is
 * given up and another one tried (at most five times).
 */
async function serveUdpAndTcp(udp: Handler, tcp: Handler): Promise<NameServer> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const tcpServer = DNS.createServer({ tcp: true, handle: tcp } as never);
    const tcpAddress = (await tcpServer.listen({ tcp: { port: 0, address: "127.0.0.1" } })) as { tcp: { port: number } };
    const port = tcpAddress.tcp.port;
    const udpServer = DNS.createServer({ udp: true, handle: udp } as never);
    const bound = await new Promise<boolean>((resolve) => {
      udpServer.once("error", () => resolve(false));
      udpServer.listen({ udp: { port, address: "127.0.0.1" } }).then(() => resolve(true));
    });
    servers.push(tcpServer);
    if (bound) {
      servers.push(udpServer);
      return { host: "127.0.0.1", port };
    }
  }
  throw new Error("no port free for both UDP and TCP after 5 tries");
}

function reply(request: DNS.Packet, change: (response: DNS.Packet) => unknown = () => undefined) {
  const response = DNS.Packet.createResponseFromRequest(request);
  change(response);
  return response;
}

const mx = (exchange: string, priority = 10) => (request: DNS.Packet, send: (response: DNS.Packet) => unknown) =>
  send(
    reply(request, (response) =>
      response.answers.push({ name: request.questions[0]!.name, type: DNS.Packet.TYPE.MX, class: DNS.Packet.CLASS.IN, ttl: 60, exchange, priority } as never),
    ),
  );

const rcode = (code: number): Handler => (request, send) => send(reply(request, (response) => (response.header.rcode = code)));

test("MX records and null MX", async () => {
  const normal = await serve(mx("mx.example.test"));
  expect(await new Dns2Resolver({ nameservers: [normal.server] }).resolveMx("example.test")).toEqual({
    status: "found",
    records: [{ exchange: "mx.example.test", priority: 10 }],
  });
  const nullMx = await serve(mx("", 0));
  expect(await new Dns2Resolver({ nameservers: [nullMx.server] }).resolveMx("nullmx.test")).toEqual({
    status: "found",
    records: [{ exchange: "", priority: 0 }],
  });
});

test("NXDOMAIN and NODATA are results", async () => {
  const nx = await serve(rcode(DNS.Packet.RCODE.NXDOMAIN));
  expect(await new Dns2Resolver({ nameservers: [nx.server] }).resolveMx("nx.test")).toEqual({ status: "nxdomain" });
  const empty = await serve((request, send) => send(reply(request)));
  expect(await new Dns2Resolver({ nameservers: [empty.server] }).resolve4("nodata.test")).toEqual({ status: "nodata" });
});

test("SERVFAIL is temporary despite other servers", async () => {
  const failing = await serve(rcode(DNS.Packet.RCODE.SERVFAIL));
  const answering = await serve(mx("mx.example.test"));
  const resolver = new Dns2Resolver({ nameservers: [failing.server, answering.server] });
  const error = await resolver.resolveMx("servfail.test").catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(DnsTemporaryError);
  expect((error as DnsTemporaryError).reason).toBe("servfail");
  expect(answering.queries).toEqual([]);
});

test("REFUSED is temporary", async () => {
  const refusing = await serve(rcode(DNS.Packet.RCODE.REFUSED));
  const error = await new Dns2Resolver({ nameservers: [refusing.server] }).resolveMx("refused.test").catch((caught: unknown) => caught);
  expect((error as DnsTemporaryError).reason).toBe("refused");
});

test("silent server times out, next is asked", async () => {
  const silent = await serve(() => undefined);
  const resolver = new Dns2Resolver({ nameservers: [silent.server], timeout: 200 });
  const error = await resolver.resolveMx("timeout.test").catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(DnsTemporaryError);
  expect((error as DnsTemporaryError).reason).toBe("timeout");

  const answering = await serve(mx("mx.example.test"));
  const failover = new Dns2Resolver({ nameservers: [silent.server, answering.server], timeout: 200 });
  expect((await failover.resolveMx("example.test")).status).toBe("found");
});

test("mismatched reply is discarded", async () => {
  const confused = await serve((request, send) => {
    const response = reply(request);
    response.questions = [{ ...request.questions[0]!, name: "other.test" }];
    response.answers.push({ name: "other.test", type: DNS.Packet.TYPE.A, class: DNS.Packet.CLASS.IN, ttl: 60, address: "192.0.2.1" } as never);
    send(response);
  });
  const answering = await serve((request, send) =>
    send(
      reply(request, (response) =>
        response.answers.push({ name: request.questions[0]!.name, type: DNS.Packet.TYPE.A, class: DNS.Packet.CLASS.IN, ttl: 60, address: "192.0.2.7" } as never),
      ),
    ),
  );
  const alone = new Dns2Resolver({ nameservers: [confused.server], timeout: 500 });
  const error = await alone.resolve4("asked.test").catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(DnsTemporaryError);
  expect((error as Error).message).toMatch(/another question/);
  const both = new Dns2Resolver({ nameservers: [confused.server, answering.server], timeout: 500 });
  expect(await both.resolve4("asked.test")).toEqual({ status: "found", records: ["192.0.2.7"] });
});

test("truncated reply retried over TCP", async () => {
  const truncating = await serve((request, send) => send(reply(request, (response) => (response.header.tc = 1))));
  const noTcp = new Dns2Resolver({ nameservers: [truncating.server], timeout: 500 });
  const error = await noTcp.resolveMx("big.test").catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(DnsTemporaryError);

  const both = await serveUdpAndTcp((request, send) => send(reply(request, (response) => (response.header.tc = 1))), mx("mx.big.test"));
  const withTcp = new Dns2Resolver({ nameservers: [both], timeout: 500 });
  expect(await withTcp.resolveMx("big.test")).toEqual({ status: "found", records: [{ exchange: "mx.big.test", priority: 10 }] });
});

test("TCP retry bounded by the timeout", async () => {
  const both = await serveUdpAndTcp((request, send) => send(reply(request, (response) => (response.header.tc = 1))), () => undefined);
  const resolver = new Dns2Resolver({ nameservers: [both], timeout: 300 });
  const error = await resolver.resolveMx("big.test").catch((caught: unknown) => caught);
  expect((error as DnsTemporaryError).reason).toBe("timeout");
});

test("CNAME chain listed out of order", async () => {
  const record = (name: string, fields: Record<string, unknown>) =>
    ({ name, class: DNS.Packet.CLASS.IN, ttl: 60, ...fields }) as never;
  const answering = await serve((request, send) =>
    send(
      reply(request, (response) => {
        // The chain asked.test -> middle.test -> real.test, listed from its end.
        response.answers.push(record("real.test", { type: DNS.Packet.TYPE.A, address: "192.0.2.9" }));
        response.answers.push(record("middle.test", { type: DNS.Packet.TYPE.CNAME, domain: "real.test" }));
        response.answers.push(record("asked.test", { type: DNS.Packet.TYPE.CNAME, domain: "middle.test" }));
      }),
    ),
  );
  const resolver = new Dns2Resolver({ nameservers: [answering.server], timeout: 500 });
  expect(await resolver.resolve4("asked.test")).toEqual({ status: "found", records: ["192.0.2.9"] });
});

test("CNAME loop without records is NODATA", async () => {
  const looping = await serve((request, send) =>
    send(
      reply(request, (response) => {
        for (const [name, domain] of [["b.test", "a.test"], ["a.test", "b.test"]]) {
          response.answers.push({ name, type: DNS.Packet.TYPE.CNAME, class: DNS.Packet.CLASS.IN, ttl: 60, domain } as never);
        }
      }),
    ),
  );
  const resolver = new Dns2Resolver({ nameservers: [looping.server], timeout: 500 });
  expect(await resolver.resolve4("a.test")).toEqual({ status: "nodata" });
});
