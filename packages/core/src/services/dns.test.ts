import DNS from "dns2";
import { afterEach, expect, test } from "vitest";
import { Dns2Resolver, DnsTemporaryError, type NameServer } from "./dns.js";

type Handler = (request: DNS.Packet, send: (response: DNS.Packet) => unknown) => void;

const servers: { close(): Promise<unknown> }[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

/** A dns2 server on 127.0.0.1; `port` fixes the port (for a TCP server beside a UDP one). */
async function serve(handle: Handler, options: { tcp?: boolean; port?: number } = {}) {
  const queries: string[] = [];
  const server = DNS.createServer({
    ...(options.tcp ? { tcp: true } : { udp: true }),
    handle: (request: DNS.Packet, send: (response: DNS.Packet) => unknown) => {
      queries.push(`${request.questions[0]!.name} ${request.questions[0]!.type}`);
      handle(request, send);
    },
  } as never);
  const listening = options.tcp
    ? await server.listen({ tcp: { port: options.port!, address: "127.0.0.1" } })
    : await server.listen({ udp: { port: 0, address: "127.0.0.1" } });
  servers.push(server);
  const address = (listening as Record<string, { port: number }>)[options.tcp ? "tcp" : "udp"]!;
  return { server: { host: "127.0.0.1", port: address.port } satisfies NameServer, queries };
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

test("MX records are returned with their preference; a null MX has an empty exchange", async () => {
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

test("NXDOMAIN and NODATA are results, not errors", async () => {
  const nx = await serve(rcode(DNS.Packet.RCODE.NXDOMAIN));
  expect(await new Dns2Resolver({ nameservers: [nx.server] }).resolveMx("nx.test")).toEqual({ status: "nxdomain" });
  const empty = await serve((request, send) => send(reply(request)));
  expect(await new Dns2Resolver({ nameservers: [empty.server] }).resolve4("nodata.test")).toEqual({ status: "nodata" });
});

test("SERVFAIL is a temporary failure even when the next server would answer", async () => {
  const failing = await serve(rcode(DNS.Packet.RCODE.SERVFAIL));
  const answering = await serve(mx("mx.example.test"));
  const resolver = new Dns2Resolver({ nameservers: [failing.server, answering.server] });
  const error = await resolver.resolveMx("servfail.test").catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(DnsTemporaryError);
  expect((error as DnsTemporaryError).reason).toBe("servfail");
  expect(answering.queries).toEqual([]);
});

test("REFUSED is a temporary failure", async () => {
  const refusing = await serve(rcode(DNS.Packet.RCODE.REFUSED));
  const error = await new Dns2Resolver({ nameservers: [refusing.server] }).resolveMx("refused.test").catch((caught: unknown) => caught);
  expect((error as DnsTemporaryError).reason).toBe("refused");
});

test("a server that never answers times out, and the next server is asked", async () => {
  const silent = await serve(() => undefined);
  const resolver = new Dns2Resolver({ nameservers: [silent.server], timeout: 200 });
  const error = await resolver.resolveMx("timeout.test").catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(DnsTemporaryError);
  expect((error as DnsTemporaryError).reason).toBe("timeout");

  const answering = await serve(mx("mx.example.test"));
  const failover = new Dns2Resolver({ nameservers: [silent.server, answering.server], timeout: 200 });
  expect((await failover.resolveMx("example.test")).status).toBe("found");
});

test("a reply to another question is discarded", async () => {
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

test("a truncated reply is asked again over TCP, and is temporary when TCP fails", async () => {
  const truncating = await serve((request, send) => send(reply(request, (response) => (response.header.tc = 1))));
  const noTcp = new Dns2Resolver({ nameservers: [truncating.server], timeout: 500 });
  const error = await noTcp.resolveMx("big.test").catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(DnsTemporaryError);

  await serve(mx("mx.big.test"), { tcp: true, port: truncating.server.port });
  const withTcp = new Dns2Resolver({ nameservers: [truncating.server], timeout: 500 });
  expect(await withTcp.resolveMx("big.test")).toEqual({ status: "found", records: [{ exchange: "mx.big.test", priority: 10 }] });
});

test("the retry over TCP of a truncated reply is bounded by the timeout", async () => {
  const truncating = await serve((request, send) => send(reply(request, (response) => (response.header.tc = 1))));
  await serve(() => undefined, { tcp: true, port: truncating.server.port });
  const resolver = new Dns2Resolver({ nameservers: [truncating.server], timeout: 300 });
  const error = await resolver.resolveMx("big.test").catch((caught: unknown) => caught);
  expect((error as DnsTemporaryError).reason).toBe("timeout");
});
