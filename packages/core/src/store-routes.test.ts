import { pino } from "pino";
import { describe, expect, test } from "vitest";
import { ok } from "./answers.js";
import type { Message } from "./message/message.js";
import type { PluginHooks } from "./plugins/plugin.js";
import { HookRunner, type LoadedPlugin } from "./plugins/runner.js";
import { Connection, Transaction } from "./session-state.js";
import { MessageVerdict, storeRoutes } from "./store-routes.js";

const logger = pino({ level: "silent" });

function owner(route: string, hooks: PluginHooks): LoadedPlugin {
  return { name: route, hooks, routes: new Set([route]), logger };
}

/** Builds a transaction with one recipient on each route. */
function transaction(routes: string[]): Transaction {
  const connection = new Connection({
    remoteAddress: "127.0.0.1",
    remotePort: 1,
    localAddress: "127.0.0.1",
    localPort: 25,
    secure: false,
    logger,
  });
  const result = new Transaction(connection, null, {});
  for (const route of routes) {
    result.recipients.push({ address: { local: route, domain: "local.test", address: `${route}@local.test` } as never, params: {}, route });
  }
  connection.transaction = result;
  return result;
}

function context(routes: string[]) {
  const txn = transaction(routes);
  return { connection: {} as Connection, transaction: txn, message: {} as Message };
}

describe("MessageVerdict", () => {
  test("the first decision wins", async () => {
    const accepted = new MessageVerdict();
    const early = accepted.promise();
    expect(accepted.accept()).toBe(true);
    expect(accepted.reject()).toBe(false);
    expect(accepted.rejected).toBe(false);
    expect(await early).toBe(true);
    expect(await accepted.promise()).toBe(true);

    const rejected = new MessageVerdict();
    expect(rejected.reject()).toBe(true);
    expect(rejected.accept()).toBe(false);
    expect(rejected.rejected).toBe(true);
    expect(await rejected.promise()).toBe(false);
  });
});

describe("storeRoutes with a verdict rejected from outside", () => {
  test("rejection during a store stops later owners", async () => {
    const events: string[] = [];
    const verdict = new MessageVerdict();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const runner = new HookRunner(
      [
        owner("first", {
          async queue({ accepted }) {
            events.push("first stores");
            void accepted.then((yes) => events.push(`first accepted ${yes}`));
            await held;
            events.push("first answers");
            return ok();
          },
        }),
        owner("second", { queue: () => (events.push("second stores"), ok()) }),
      ],
      10_000,
    );

    const storing = storeRoutes(runner, context(["first", "second"]), logger, verdict);
    await Promise.resolve();
    expect(events).toEqual(["first stores"]);
    expect(verdict.reject()).toBe(true);
    await Promise.resolve();
    // The owner learns of the rejection while its call still runs.
    expect(events).toEqual(["first stores", "first accepted false"]);
    release();
    expect(await storing).toEqual({ kind: "rejected" });
    expect(events).toEqual(["first stores", "first accepted false", "first answers"]);
  });

  test("a rejection before the queue calls stores nothing", async () => {
    const events: string[] = [];
    const verdict = new MessageVerdict();
    verdict.reject();
    const runner = new HookRunner([owner("first", { queue: () => (events.push("first stores"), ok()) })], 10_000);
    expect(await storeRoutes(runner, context(["first"]), logger, verdict)).toEqual({ kind: "rejected" });
    expect(events).toEqual([]);
  });

  test("a rejection after every route stored the message changes nothing", async () => {
    const decisions: boolean[] = [];
    const verdict = new MessageVerdict();
    const runner = new HookRunner(
      [owner("first", { queue: ({ accepted }) => (void accepted.then((yes) => decisions.push(yes)), ok()) })],
      10_000,
    );
    expect(await storeRoutes(runner, context(["first"]), logger, verdict)).toEqual({ kind: "stored" });
    expect(verdict.reject()).toBe(false);
    await Promise.resolve();
    expect(decisions).toEqual([true]);
  });
});
