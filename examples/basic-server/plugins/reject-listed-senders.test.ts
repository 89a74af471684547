import { testPlugin } from "@mailroom/testing";
import { expect, test } from "vitest";
import plugin from "./reject-listed-senders.ts";

const harness = await testPlugin(plugin, { file: "../blocked-senders.txt" }, { configDir: import.meta.dirname });

test.each([
  ["spammer@spam.example", "DENY", 550],
  ["Spammer@SPAM.example", "DENY", 550],
  ["alice@example.test", "CONT", 250],
  ["spammer@other.example", "CONT", 250],
  ["verkauf@xn--bcher-kva.example", "DENY", 550],
  ["verkauf@XN--BCHER-KVA.example", "DENY", 550],
  ["", "CONT", 250],
  ["#comment@spam.example", "CONT", 250],
])("sender %s", async (sender, verdict, code) => {
  const call = await harness.session().mail(sender);
  expect(call.verdict).toBe(verdict);
  expect(call.code).toBe(code);
});
