// Replies that break the rules or the usual sizes: an enhanced status code
// of another class than its reply code, a 3xx reply where a final reply is
// due, and a long multiline rejection. The status recorded and reported
// always has the class of the outcome, and the bounce keeps the limit of
// 998 characters per line.
import { rm } from "node:fs/promises";
import { afterEach, expect, test } from "vitest";
import { listenRaw, makeServerDir, parseMultipart, startDns, startMailroom, statusGroups, submit, waitFor } from "./mx-kit.js";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** Starts a mail exchanger that replies to RCPT and to the end of DATA with the given lines. */
async function startExchanger(replies: { rcpt: (line: string) => string; dataEnd: string }) {
  const listener = await listenRaw((socket) => {
    let buffer = "";
    let inData = false;
    socket.write("220 odd.test ESMTP\r\n");
    socket.on("data", (chunk: Buffer) => {
      buffer += chunk.toString("latin1");
      // Each pass takes one command line or the whole message, so it ends.
      for (;;) {
        if (inData) {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end === -1) return;
          buffer = buffer.slice(end + 5);
          inData = false;
          socket.write(`${replies.dataEnd}\r\n`);
          continue;
        }
        const end = buffer.indexOf("\r\n");
        if (end === -1) return;
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "RCPT") socket.write(`${replies.rcpt(line)}\r\n`);
        else if (verb === "DATA") {
          inData = true;
          socket.write("354 go on\r\n");
        } else if (verb === "QUIT") return void socket.end("221 2.0.0 bye\r\n");
        else socket.write("250 2.0.0 ok\r\n");
      }
    });
  });
  cleanup.push(() => listener.close());
  return listener;
}

async function setup(replies: { rcpt: (line: string) => string; dataEnd: string }) {
  const remote = await startExchanger(replies);
  const dns = await startDns({ "odd.test": { MX: [[10, "mx.odd.test"]] }, "mx.odd.test": { A: ["127.0.0.1"] } });
  cleanup.push(() => dns.close());
  const dir = await makeServerDir();
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const server = await startMailroom({ dir, dns, mx: { port: remote.port } });
  cleanup.push(() => server.stop());
  return server;
}

test("enhanced code of another class", async () => {
  const server = await setup({
    rcpt: (line) => (line.includes("<gone@") ? "550 2.1.5 recipient ok" : "250 2.1.5 ok"),
    dataEnd: "250 5.0.0 queued anyway",
  });
  expect(await submit(server, "alice@local.test", ["gone@odd.test", "kept@odd.test"])).toEqual([250, 250, 250, 250, 250]);

  const [bounce] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "the bounce");
  const report = parseMultipart(bounce!.data.slice(bounce!.data.indexOf("\r\nFrom:") + 2));
  const [, recipient] = statusGroups(report.parts[1]!.body);
  expect(recipient!["final-recipient"]).toBe("rfc822; gone@odd.test");
  expect(recipient!.status).toBe("5.0.0");
  expect(recipient!["diagnostic-code"]).toBe("smtp; 550 2.1.5 recipient ok");
  const delivered = server.logs.find((line) => line.msg === "delivered");
  expect(delivered?.recipient).toBe("kept@odd.test");
  expect(delivered?.enhanced).toBe("2.0.0");
});

test("3xx reply to the message defers with 4.0.0", async () => {
  const server = await setup({ rcpt: () => "250 2.1.5 ok", dataEnd: "354 go on again" });
  expect(await submit(server, "alice@local.test", ["late@odd.test"])).toEqual([250, 250, 250, 250]);

  const deferral = await waitFor(() => server.logs.find((line) => line.msg === "delivery deferred"), "the deferral");
  expect(deferral.code).toBe(354);
  expect(deferral.enhanced).toBe("4.0.0");
});

test("long multiline rejection bounces within line limits", async () => {
  const lines = Array.from({ length: 20 }, (_, index) => `550${index === 19 ? " " : "-"}5.7.1 ${"policy text ".repeat(8)}${index}`);
  const server = await setup({ rcpt: () => lines.join("\r\n"), dataEnd: "250 2.0.0 queued" });
  expect(await submit(server, "alice@local.test", ["long@odd.test"])).toEqual([250, 250, 250, 250]);

  const [bounce] = await waitFor(async () => {
    const local = await server.local();
    return local.length === 1 && local;
  }, "the bounce");
  const longest = Math.max(...bounce!.data.split("\r\n").map((line) => line.length));
  expect(longest).toBeLessThanOrEqual(998);
  const report = parseMultipart(bounce!.data.slice(bounce!.data.indexOf("\r\nFrom:") + 2));
  const [, recipient] = statusGroups(report.parts[1]!.body);
  expect(recipient!["diagnostic-code"]).toBe(`smtp; ${lines.join(" ")}`);
});
