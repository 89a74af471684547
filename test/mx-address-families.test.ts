import { rm } from "node:fs/promises";
import { afterEach, expect, test } from "vitest";
import { makeServerDir, startDns, startMailroom, startRemoteMx, submit, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function deliverThrough(remoteHost: string) {
  const remote = await startRemoteMx({ host: remoteHost });
  cleanup.push(() => remote.close());
  const dns = await startDns({
    "dual.test": { MX: [[10, "mx.dual.test"]] },
    "mx.dual.test": { AAAA: ["::1"], A: ["127.0.0.1"] },
  });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => server.stop());

  expect(await submit(server, "alice@local.test", ["bob@dual.test"])).toEqual([250, 250, 250, 250]);
  await waitFor(() => remote.received.length === 1, "delivery");
  return { remote, dns };
}

test("AAAA address of an MX host is tried first", async () => {
  const { remote, dns } = await deliverThrough("::1");
  expect(remote.received[0]!.to).toEqual(["bob@dual.test"]);
  const lookups = dns.queries.filter((query) => query.name === "mx.dual.test").map((query) => query.type);
  expect(lookups).toContain("AAAA");
});

test("A address is used when the AAAA one refuses", async () => {
  const { remote } = await deliverThrough("127.0.0.1");
  expect(remote.received[0]!.to).toEqual(["bob@dual.test"]);
});
