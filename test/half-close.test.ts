import net from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startTestServer } from "@mailroom/testing";
import { expect, test } from "vitest";
import { SINK_PLUGIN } from "./fixtures/paths.js";

test("half-closed client still gets every reply", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-halfclose-"));
  const server = await startTestServer({ plugins: [{ use: SINK_PLUGIN, with: { out: "out.eml" } }] }, { dir });

  const socket = net.connect(server.port, "127.0.0.1", () => {
    socket.end(
      "EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@local.test>\r\nDATA\r\n" +
        "Subject: half\r\n\r\nclosed\r\n.\r\nQUIT\r\n",
    );
  });
  let received = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk) => (received += chunk));
  await new Promise((resolve) => socket.once("close", resolve));

  const codes = received.split("\r\n").filter(Boolean).map((line) => line.slice(0, 4));
  expect(codes.at(-3)).toBe("354 ");
  expect(codes.at(-2)).toBe("250 ");
  expect(codes.at(-1)).toBe("221 ");
  expect(await readFile(path.join(dir, "out.eml"), "utf8")).toContain("Subject: half");
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});

test("QUIT closes without waiting for the client", async () => {
  const server = await startTestServer({ plugins: [] });
  // A client that keeps its sending side open after QUIT, as some do.
  const socket = net.connect({ port: server.port, host: "127.0.0.1", allowHalfOpen: true });
  let received = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk) => (received += chunk));
  socket.on("error", () => {});
  const ended = new Promise((resolve) => socket.once("end", resolve));
  const closed = new Promise((resolve) => socket.once("close", resolve));
  await new Promise((resolve) => socket.once("connect", resolve));
  socket.write("QUIT\r\n");
  await ended;
  expect(received).toMatch(/221 2\.0\.0 Bye\r\n$/);

  // The server's socket is gone, so more input meets a reset at once rather
  // than after smtp-server's half-close deadline (5 s). The client learns of
  // the reset at its next write.
  const started = Date.now();
  socket.write("NOOP\r\n");
  await new Promise((resolve) => setTimeout(resolve, 300));
  socket.write("NOOP\r\n");
  await closed;
  expect(Date.now() - started).toBeLessThan(1500);
  await server.stop();
});
