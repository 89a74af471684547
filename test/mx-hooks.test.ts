import { readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { TOKENS, type OutboundQueue } from "@mailroom/core";
import { makeServerDir, startDns, startMailroom, startRemoteMx, submit, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

const HOOKS = (port: number) => `
import { appendFileSync } from "node:fs";
import { definePlugin, ok } from "@mailroom/core";

export default definePlugin({
  name: "outbound-hooks",
  setup(context) {
    const note = (entry) => appendFileSync(context.configDir + "/hooks.log", JSON.stringify(entry) + "\\n");
    return {
      get_mx: ({ message }) => {
        note({ hook: "get_mx", domain: message.domain });
        if (message.domain === "hooked.test") return ok({ mx: [{ exchange: "127.0.0.1", priority: 10, port: ${port} }] });
      },
      deliver: ({ message, host, address }) => void note({ hook: "deliver", id: message.id, host, address }),
      delivered: ({ results }) => void note({ hook: "delivered", recipients: results.map((r) => r.recipient) }),
      deferred: ({ results, nextAttemptAt }) => void note({ hook: "deferred", recipients: results.map((r) => r.recipient), nextAttemptAt }),
      bounce: ({ message, results }) => {
        note({ hook: "bounce", sender: message.sender, recipients: results.map((r) => r.recipient) });
        if (message.sender === "quiet@local.test") return ok();
      },
    };
  },
});
`;

test("outbound hooks route, observe and suppress", async () => {
  const remote = await startRemoteMx({
    rcpt: (address) => {
      if (address.startsWith("no")) return { code: 550, message: "5.1.1 unknown" };
      if (address.startsWith("wait")) return { code: 451, message: "4.3.2 later" };
      return undefined;
    },
  });
  cleanup.push(() => remote.close());
  const dns = await startDns({});
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, "hooks.ts"), HOOKS(remote.port));
  const server = await startMailroom({ dir, dns, mx: { port: 9 }, plugins: ["./hooks.ts"] });
  cleanup.push(() => server.stop());

  await submit(server, "alice@local.test", ["yes@hooked.test", "wait@hooked.test"]);
  await submit(server, "quiet@local.test", ["no@hooked.test"]);
  const queue = server.server.container.resolve<OutboundQueue>(TOKENS.OutboundQueue);
  await waitFor(async () => {
    const entries = await queue.list();
    return entries.length === 1 && entries[0]!.attempts === 1 && entries[0]!.recipients.length === 1;
  }, "one deferred record");
  const bounceSeen = await waitFor(async () => {
    const text = await readFile(path.join(dir, "hooks.log"), "utf8").catch(() => "");
    return text.includes('"hook":"bounce"') && text;
  }, "bounce hook");
  const entries = bounceSeen.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);

  // One get_mx per connection: the second message may join the first one's connection.
  const routed = entries.filter((entry) => entry.hook === "get_mx").map((entry) => entry.domain);
  expect(routed.length).toBeGreaterThanOrEqual(1);
  expect(routed.every((domain) => domain === "hooked.test")).toBe(true);
  expect(entries.filter((entry) => entry.hook === "deliver").every((entry) => entry.host === "127.0.0.1" && entry.address === "127.0.0.1")).toBe(true);
  expect(entries.find((entry) => entry.hook === "delivered")!.recipients).toEqual(["yes@hooked.test"]);
  expect(entries.find((entry) => entry.hook === "deferred")!.recipients).toEqual(["wait@hooked.test"]);
  expect(entries.find((entry) => entry.hook === "bounce")).toMatchObject({ sender: "quiet@local.test", recipients: ["no@hooked.test"] });
  expect(remote.received.map((message) => message.to)).toEqual([["yes@hooked.test"]]);
  // The bounce hook answered, so no report was stored for quiet@local.test.
  await waitFor(() => server.logs.some((line) => line.msg === "bounce suppressed by a plugin"), "suppression log");
  expect(await server.local()).toHaveLength(0);
  // No DNS lookup was needed: get_mx answered with an address.
  expect(dns.queries).toEqual([]);
});
