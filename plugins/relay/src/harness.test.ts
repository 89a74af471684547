import { memoryStore, testPlugin, testPlugins } from "@mailroom/testing";
import { describe, expect, test } from "vitest";
import plugin from "./index.js";

const options = { localDomains: ["local.example"], trustedNetworks: ["192.0.2.0/24"] };

// The engine accepts a relayed recipient only when some plugin stores the
// route "outbound", as plugin-mx does on a server.
const outbound = () => memoryStore({ route: "outbound", acceptRecipients: false }).plugin;

describe("relay plugin through the test kit", () => {
  test.each([
    ["198.51.100.7", undefined, "victim@evil.example", "DENY", 550],
    ["198.51.100.7", undefined, "bob@local.example", "CONT", 550],
    ["198.51.100.7", undefined, "victim%evil.example@local.example", "CONT", 550],
    ["192.0.2.44", undefined, "friend@remote.example", "OK", 250],
    ["198.51.100.7", "alice", "friend@remote.example", "OK", 250],
    ["::ffff:192.0.2.9", undefined, "friend@remote.example", "OK", 250],
  ])("client %s user %s to %s", async (remoteAddress, user, recipient, verdict, code) => {
    const harness = await testPlugins([[plugin, options], outbound()]);
    const session = harness.session({ remoteAddress, ...(user ? { user } : {}) });
    await session.connect();
    await session.mail("sender@remote.example");
    const call = await session.rcpt(recipient);
    expect(call.verdict).toBe(verdict);
    expect(call.code).toBe(code);
    if (verdict === "OK") expect(call.answer?.route).toBe("outbound");
  });

  test("connect records whether the client may relay", async () => {
    const harness = await testPlugin(plugin, options);
    const trusted = harness.session({ remoteAddress: "192.0.2.1" });
    const stranger = harness.session({ remoteAddress: "203.0.113.5" });
    await trusted.connect();
    await stranger.connect();
    expect(trusted.connection.relaying).toBe(true);
    expect(stranger.connection.relaying).toBe(false);
  });
});
