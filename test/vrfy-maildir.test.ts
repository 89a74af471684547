import { startTestServer } from "@mailroom/testing";
import { expect, test } from "vitest";

// The engine counts each 550 5.1.1 once; maildir must not count it again.
test("unknown maildir recipients count once each", async () => {
  const server = await startTestServer({
    plugins: [
      { use: "@mailroom/plugin-vrfy", with: { maxFailures: 3 } },
      {
        use: "@mailroom/plugin-maildir",
        with: { root: "./mail", domains: { "local.example": { mailboxes: ["bob"] } } },
      },
    ],
  });
  const client = await server.connect();
  await client.command("EHLO client.example");
  await client.command("MAIL FROM:<a@sender.example>");
  for (const name of ["one", "two", "three"]) {
    expect((await client.command(`RCPT TO:<${name}@local.example>`)).code).toBe(550);
  }
  const cutOff = await client.command("RCPT TO:<bob@local.example>");
  expect(cutOff.code).toBe(421);
  expect(cutOff.enhanced).toBe("4.7.0");
  await client.closed();
  await server.stop();
});
