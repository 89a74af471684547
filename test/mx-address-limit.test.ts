// A destination's DNS decides how many mail exchangers and addresses it
// lists. One delivery attempt tries at most maxMxAddresses of them, most
// preferred first, and looks up no more hosts than it needs.
import { rm } from "node:fs/promises";
import { afterEach, expect, test } from "vitest";
import { listenRaw, makeServerDir, startDns, startMailroom, submit, waitFor, type Zone } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/**
 * Returns a zone whose domain lists `hosts` mail exchangers, each with `perHost` addresses on
 * 127.0.0.1. The MX answer must fit in one UDP reply of 512 octets,
 * because the DNS server of mx-kit does not answer over TCP.
 */
function manyExchangers(hosts: number, perHost: number, preference: (index: number) => number): Zone {
  const zone: Zone = {
    "many.test": { MX: Array.from({ length: hosts }, (_, index) => [preference(index), `mx${index}.many.test`] as [number, string]) },
  };
  for (let index = 0; index < hosts; index++) zone[`mx${index}.many.test`] = { A: Array(perHost).fill("127.0.0.1") };
  return zone;
}

/** Starts a mail exchanger that turns every connection away with a 421 greeting, and counts them. */
async function startBusyExchanger() {
  const state = { port: 0, connections: 0 };
  const listener = await listenRaw((socket) => {
    state.connections += 1;
    socket.end("421 4.3.2 too busy\r\n");
  });
  cleanup.push(() => listener.close());
  state.port = listener.port;
  return state;
}

async function attemptOnce(zone: Zone, mx: Record<string, unknown>) {
  const remote = await startBusyExchanger();
  const dns = await startDns(zone);
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port, ...mx } });
  cleanup.push(() => server.stop());

  expect(await submit(server, "alice@local.test", ["bob@many.test"])).toEqual([250, 250, 250, 250]);
  const deferral = await waitFor(() => server.logs.find((line) => line.msg === "delivery deferred"), "deferral");
  return { remote, dns, deferral };
}

test("default limit of ten addresses", async () => {
  const { remote, deferral } = await attemptOnce(manyExchangers(8, 2, (index) => index), {});
  expect(remote.connections).toBe(10);
  expect(deferral.response).toBe("421 4.3.2 too busy");
});

test("limit counts every address of a host", async () => {
  const { remote } = await attemptOnce(manyExchangers(4, 5, (index) => index * 10), { maxMxAddresses: 7 });
  expect(remote.connections).toBe(7);
});

test("hosts past the limit are not looked up", async () => {
  const { dns } = await attemptOnce(manyExchangers(10, 1, (index) => index), { maxMxAddresses: 3 });
  const looked = new Set(dns.queries.filter((query) => query.type === "A").map((query) => query.name));
  expect([...looked].sort()).toEqual(["mx0.many.test", "mx1.many.test", "mx2.many.test"]);
});

test("equal preferences are all looked up", async () => {
  const { remote, dns } = await attemptOnce(manyExchangers(6, 1, () => 10), { maxMxAddresses: 2 });
  const looked = new Set(dns.queries.filter((query) => query.type === "A").map((query) => query.name));
  expect(looked.size).toBe(6);
  expect(remote.connections).toBe(2);
});
