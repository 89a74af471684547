import { pino } from "pino";
import { describe, expect, test } from "vitest";
import { deny, ok } from "../answers.js";
import type { PluginHooks } from "./plugin.js";
import { HookRunner, type LoadedPlugin } from "./runner.js";

const logger = pino({ level: "silent" });
const args = { connection: {} as never, argument: "bob" };

function plugin(name: string, hooks: PluginHooks): LoadedPlugin {
  return { name, hooks, routes: new Set(), logger };
}

describe("HookRunner", () => {
  test("first answer other than CONT ends the chain", async () => {
    const calls: string[] = [];
    const runner = new HookRunner(
      [
        plugin("a", { vrfy: () => void calls.push("a") }),
        plugin("b", { vrfy: () => (calls.push("b"), deny()) }),
        plugin("c", { vrfy: () => (calls.push("c"), ok()) }),
      ],
      1000,
    );
    const outcome = await runner.run("vrfy", args, logger);
    expect(outcome).toMatchObject({ kind: "answer", plugin: "b", answer: { verdict: "DENY" } });
    expect(calls).toEqual(["a", "b"]);
  });

  test("throwing handler is an error naming the plugin", async () => {
    const runner = new HookRunner([plugin("boom", { vrfy: () => { throw new Error("bad"); } })], 1000);
    const outcome = await runner.run("vrfy", args, logger);
    expect(outcome).toMatchObject({ kind: "error", plugin: "boom" });
  });

  test("handler past the deadline is an error", async () => {
    const runner = new HookRunner([plugin("slow", { vrfy: () => new Promise(() => {}) })], 50);
    const outcome = await runner.run("vrfy", args, logger);
    expect(outcome.kind).toBe("error");
    expect(String((outcome as { error: Error }).error.message)).toMatch(/slow did not answer vrfy within 50 ms/);
  });

  test("return value that is not an answer is an error", async () => {
    const runner = new HookRunner([plugin("odd", { vrfy: () => 550 as never })], 1000);
    expect((await runner.run("vrfy", args, logger)).kind).toBe("error");
  });

  test("runAll calls every plugin despite failures", async () => {
    const calls: string[] = [];
    const runner = new HookRunner(
      [
        plugin("a", { disconnect: () => { calls.push("a"); throw new Error("x"); } }),
        plugin("b", { disconnect: () => void calls.push("b") }),
      ],
      1000,
    );
    await runner.runAll("disconnect", { connection: {} as never }, logger);
    expect(calls).toEqual(["a", "b"]);
  });
});
