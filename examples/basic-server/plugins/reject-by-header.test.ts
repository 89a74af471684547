import { memoryStore, testPlugin, testPlugins } from "@mailroom/testing";
import { describe, expect, test } from "vitest";
import plugin from "./reject-by-header.ts";

const options = {
  rules: [
    { header: "X-Spam-Flag", matches: "^yes$" },
    { header: "Subject", matches: "\\bviagra\\b", message: "Spam is not welcome here" },
  ],
};

async function send(headers: string) {
  // The store accepts the recipient and keeps the message once the filter let it through.
  const store = memoryStore();
  const harness = await testPlugins([[plugin, options], store.plugin]);
  const session = harness.session();
  await session.mail("sender@remote.example");
  await session.rcpt("alice@example.test");
  const call = await session.data(`${headers}\r\n\r\nbody\r\n`);
  return { call, notes: session.transaction!.notes, stored: store.messages };
}

describe("reject-by-header", () => {
  test("spam flag header is rejected", async () => {
    const { call, notes, stored } = await send("Subject: hello\r\nX-Spam-Flag: YES");
    expect(call.verdict).toBe("DENY");
    expect(call.code).toBe(550);
    expect(call.enhanced).toBe("5.7.1");
    expect(notes.rejectedByHeader).toBe("X-Spam-Flag");
    expect(stored).toEqual([]);
  });

  test("subject rule uses its own text", async () => {
    const { call } = await send("Subject: cheap VIAGRA now");
    expect(call.message).toBe("Spam is not welcome here");
  });

  test("folded header value still matches", async () => {
    const { call } = await send("Subject: a long\r\n subject about viagra");
    expect(call.verdict).toBe("DENY");
  });

  test("encoded subject is decoded before matching", async () => {
    const { call } = await send("Subject: =?UTF-8?B?Q2hlYXAgVklBR1JB?=\r\n =?UTF-8?Q?_n=C3=B6w?=");
    expect(call.verdict).toBe("DENY");
    expect(call.message).toBe("Spam is not welcome here");
  });

  test("clean message goes on to queue", async () => {
    const { call, stored } = await send("Subject: hello\r\nX-Spam-Flag: NO");
    expect(call.verdict).toBe("OK");
    expect(call.code).toBe(250);
    expect(stored).toHaveLength(1);
  });

  test("invalid pattern is an option error", async () => {
    await expect(testPlugin(plugin, { rules: [{ header: "Subject", matches: "(" }] })).rejects.toThrow(
      /rules\.0\.matches: expected a valid regular expression/,
    );
  });
});
