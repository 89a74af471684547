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

  test("reply text outside US-ASCII is replaced and logged", async () => {
    const lines: Record<string, unknown>[] = [];
    const capture = pino({ level: "debug" }, {
      write(line: string) {
        lines.push(JSON.parse(line));
      },
    });
    const runner = new HookRunner([plugin("strict", { vrfy: () => deny({ code: 550, message: "nö wäy" }) })], 1000);

    const first = await runner.run("vrfy", args, capture);
    const second = await runner.run("vrfy", args, capture);

    expect(first).toMatchObject({ kind: "answer", plugin: "strict", answer: { verdict: "DENY", code: 550, message: "n? w?y" } });
    expect(second).toMatchObject({ kind: "answer", answer: { message: "n? w?y" } });
    const logged = lines.filter((line) => line.msg === "reply text contains characters outside US-ASCII; each is sent as ?");
    expect(logged.map((line) => line.level)).toEqual([40, 20]);
    expect(logged[0]).toMatchObject({ plugin: "strict", hook: "vrfy", message: "nö wäy" });
  });

  test("replaced answer codes are logged once at warn", async () => {
    const lines: Record<string, unknown>[] = [];
    const capture = pino({ level: "debug" }, {
      write(line: string) {
        lines.push(JSON.parse(line));
      },
    });
    const runner = new HookRunner([plugin("odd", { vrfy: () => deny({ code: 450 }) })], 1000);

    const outcome = await runner.run("vrfy", args, capture);
    await runner.run("vrfy", args, capture);

    // The answer stays as the plugin gave it; replyFor applies the defaults.
    expect(outcome).toMatchObject({ kind: "answer", answer: { verdict: "DENY", code: 450 } });
    const logged = lines.filter((line) => line.msg === "plugin answer code replaced in the reply");
    expect(logged.map((line) => line.level)).toEqual([40, 20]);
    expect(logged[0]).toMatchObject({ plugin: "odd", hook: "vrfy", verdict: "DENY", givenCode: 450, usedCode: 550, usedEnhanced: "5.1.1" });
    expect(logged[0]!.reason).toBe("reply code 450 does not fit verdict DENY, which takes 5xx");
  });

  test("warnings for replaced codes are bounded", async () => {
    const lines: Record<string, unknown>[] = [];
    const capture = pino({ level: "debug" }, {
      write(line: string) {
        lines.push(JSON.parse(line));
      },
    });
    let count = 0;
    const runner = new HookRunner([plugin("odd", { vrfy: () => deny({ enhanced: `x${count++}` }) })], 1000);

    for (let i = 0; i < 1005; i++) await runner.run("vrfy", args, capture);

    const levels = lines.filter((line) => line.msg === "plugin answer code replaced in the reply").map((line) => line.level);
    expect(levels).toHaveLength(1005);
    expect(levels.filter((level) => level === 40)).toHaveLength(1000);
    expect(levels.slice(1000)).toEqual([20, 20, 20, 20, 20]);
  });

  test("ASCII reply text keeps the plugin's answer object", async () => {
    const answer = deny({ message: "plain" });
    const runner = new HookRunner([plugin("plain", { vrfy: () => answer })], 1000);
    const outcome = await runner.run("vrfy", args, logger);
    expect(outcome).toMatchObject({ kind: "answer" });
    expect((outcome as { answer: unknown }).answer).toBe(answer);
  });

  test("firstRoute returns each plugin's first route", () => {
    const routes = new Set(["box", "spare"]);
    const runner = new HookRunner(
      [{ name: "store", hooks: {}, routes, logger }, plugin("plain", {}), { name: "store", hooks: {}, routes: new Set(["other"]), logger }],
      1000,
    );
    expect(runner.firstRoute("store")).toBe("box");
    expect(runner.firstRoute("store")).toBe("box");
    expect(runner.firstRoute("plain")).toBeUndefined();
    expect(runner.firstRoute("missing")).toBeUndefined();
  });

  test("firstRoute sees a route registered after setup", () => {
    const routes = new Set<string>();
    const runner = new HookRunner([{ name: "late", hooks: {}, routes, logger }], 1000);
    expect(runner.firstRoute("late")).toBeUndefined();
    routes.add("late-route");
    expect(runner.firstRoute("late")).toBe("late-route");
  });
});
