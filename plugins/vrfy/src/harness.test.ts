import { TOKENS, type UserDirectory } from "@mailroom/core";
import { testPlugin } from "@mailroom/testing";
import { describe, expect, test } from "vitest";
import plugin from "./index.js";

const directory: UserDirectory = {
  domains: () => ["local.example"],
  lookup: (local, domain) => (local === "bob" && domain === "local.example" ? { mailbox: "bob", domain } : null),
  findLocalPart: (local) => (local === "bob" ? [{ mailbox: "bob", domain: "local.example" }] : []),
};
const register = (container: import("@mailroom/core").DependencyContainer) =>
  container.register(TOKENS.UserDirectory, { useValue: directory });

describe("vrfy plugin through the test kit", () => {
  test("ambiguous mode gives 252 for anyone", async () => {
    const harness = await testPlugin(plugin, {}, { register });
    for (const argument of ["bob", "nosuch", "<bob@local.example>"]) {
      const call = await harness.session().vrfy(argument);
      expect(call.code).toBe(252);
      expect(call.enhanced).toBe("2.1.5");
    }
  });

  test("verify mode answers a trusted client", async () => {
    const harness = await testPlugin(plugin, { mode: "verify", verifyFrom: ["trusted"] }, { register });
    const session = harness.session();
    session.connection.relaying = true;
    expect((await session.vrfy("bob")).code).toBe(250);
    expect((await session.vrfy("nosuch@local.example")).enhanced).toBe("5.1.1");
    expect((await harness.session().vrfy("bob")).code).toBe(252);
  });

  test("failed lookups close the connection at rcpt", async () => {
    const harness = await testPlugin(plugin, { maxFailures: 2 }, { register });
    const session = harness.session();
    session.connection.failedLookups = 2;
    await session.mail("a@sender.example");
    const call = await session.rcpt("bob@local.example");
    expect(call.verdict).toBe("DENYSOFTDISCONNECT");
    expect(call.code).toBe(421);
    expect(call.reply?.close).toBe(true);
  });

  test("expn never lists members", async () => {
    const harness = await testPlugin(plugin, {}, { register });
    const call = await harness.call("expn", { connection: harness.session().connection, argument: "staff" });
    expect(call.code).toBe(502);
  });
});
