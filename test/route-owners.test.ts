// Two plugins that register the same route. The engine would hand the
// recipients that the later one accepts to the first one, so the server,
// a reload and the test kit reject such a set and name both plugins.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConfigError, definePlugin, MailroomServer, ok } from "@mailroom/core";
import { SmtpTestClient, startTestServer, testPlugins } from "@mailroom/testing";
import { pino } from "pino";
import { afterEach, beforeEach, expect, test } from "vitest";

/** Creates the source of a plugin that registers `route` and accepts the recipients whose local part is `local`. */
function storeSource(name: string, route: string, local: string): string {
  return `
import { definePlugin, ok } from "@mailroom/core";

export default definePlugin({
  name: "${name}",
  setup({ registerRoute }) {
    registerRoute("${route}");
    return {
      rcpt: ({ address }) => (address.local === "${local}" ? ok() : undefined),
      queue: () => ok(),
    };
  },
});
`;
}

function config(plugins: string[]) {
  return { server: { hostname: "mx.example.test", listen: ["127.0.0.1:0"] }, plugins: plugins.map((use) => ({ use })) };
}

let dir: string;
let server: MailroomServer | undefined;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "route-owners-"));
  await writeFile(path.join(dir, "store-a.ts"), storeSource("store-a", "box", "a"));
  await writeFile(path.join(dir, "store-b.ts"), storeSource("store-b", "box", "b"));
  await writeFile(path.join(dir, "store-c.ts"), storeSource("store-c", "crate", "c"));
});

afterEach(async () => {
  await server?.close();
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

test("start rejects a route registered twice", async () => {
  const start = startTestServer(config(["./store-a.ts", "./store-b.ts"]), { dir });
  await expect(start).rejects.toBeInstanceOf(ConfigError);
  await expect(start).rejects.toThrow(/plugins\[1\]: plugin store-b registers the route "box", which plugin store-a \(plugins\[0\]\)/);
});

test("reload with a route registered twice keeps the old set", async () => {
  const file = path.join(dir, "mailroom.yaml");
  await writeFile(file, JSON.stringify(config(["./store-a.ts", "./store-c.ts"])));
  server = await MailroomServer.fromFile(file, { logger: pino({ level: "silent" }) });
  const port = (await server.listen())[0]!.port;
  await writeFile(file, JSON.stringify(config(["./store-a.ts", "./store-b.ts"])));
  await expect(server.reload()).rejects.toThrow(/plugin store-b registers the route "box"/);

  const client = await SmtpTestClient.connect(port);
  const replies = await client.send({ from: "x@sender.example", to: ["c@dest.example"], message: "Subject: t\r\n\r\nhi\r\n" });
  expect(replies.map((reply) => reply.code)).toEqual([250, 250, 250, 250]);
  expect((await client.command("MAIL FROM:<x@sender.example>")).code).toBe(250);
  expect((await client.command("RCPT TO:<b@dest.example>")).code).toBe(550);
  client.close();
});

test("kit rejects a route registered twice", async () => {
  let closed = 0;
  const store = (name: string) =>
    definePlugin({
      name,
      setup({ registerRoute }) {
        registerRoute("box");
        return {
          queue: () => ok(),
          close: () => {
            closed += 1;
          },
        };
      },
    });
  await expect(testPlugins([store("first"), store("second")])).rejects.toThrow(
    /plugin second registers the route "box", which plugin first \(plugins\[0\]\) registered first/,
  );
  expect(closed).toBe(2);
});
