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
