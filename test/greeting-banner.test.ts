import { startTestServer, type TestServer } from "@mailroom/testing";
import { afterEach, expect, test } from "vitest";
import { SINK_PLUGIN } from "./fixtures/paths.js";

let server: TestServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

test("greeting without a banner is hostname and ESMTP", async () => {
  server = await startTestServer({ server: { hostname: "mx.test" }, plugins: [{ use: SINK_PLUGIN }] });
  const client = await server.connect();
  expect(client.greeting.raw).toBe("220 mx.test ESMTP");
  client.close();
});

test("server.banner follows ESMTP in the greeting", async () => {
  server = await startTestServer({
    server: { hostname: "mx.test", banner: "Mailroom ready; no UCE" },
    plugins: [{ use: SINK_PLUGIN }],
  });
  const client = await server.connect();
  expect(client.greeting.raw).toBe("220 mx.test ESMTP Mailroom ready; no UCE");
  // The banner is for the greeting only; EHLO still names the host alone.
  const ehlo = await client.command("EHLO client.test");
  expect(ehlo.lines[0]).toBe("mx.test Hello client.test");
  client.close();
});
