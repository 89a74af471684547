import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import DNS from "dns2";
import { startTestServer } from "@mailroom/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { SINK_PLUGIN } from "./fixtures/paths.js";


let dir: string;
let dns: ReturnType<typeof DNS.createServer>;
let dnsPort: number;
let answer: "name" | "junk" | "silent" = "name";

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-rdns-"));
  dns = DNS.createServer({
    udp: true,
    handle(request, send) {
      if (answer === "silent") return;
      const question = request.questions[0]!;
      const response = DNS.Packet.createResponseFromRequest(request);
      if (question.name === "1.0.0.127.in-addr.arpa") {
        const domain = answer === "name" ? "client.ptr.test" : "bad name\r\nX-Injected: yes";
        response.answers.push({ name: question.name, type: DNS.Packet.TYPE.PTR, class: DNS.Packet.CLASS.IN, ttl: 60, domain } as never);
      }
      send(response);
    },
  });
  const bound = await dns.listen({ udp: { port: 0, address: "127.0.0.1" } });
  dnsPort = (bound as unknown as { udp: { port: number } }).udp.port;
});

afterAll(async () => {
  await dns.close();
  await rm(dir, { recursive: true, force: true });
});

async function receivedLine(): Promise<string> {
  const server = await startTestServer(
    {
      server: {
        hostname: "mx.test",
        dns: { nameservers: [`127.0.0.1:${dnsPort}`], timeout: "2s" },
        reverseDns: { enabled: true, timeout: "300ms" },
      },
      plugins: [{ use: SINK_PLUGIN, with: { out: "out.eml" } }],
    },
    { dir },
  );
  const client = await server.connect();
  const replies = await client.send({ from: "a@sender.test", to: ["b@local.test"], message: "Subject: x\r\n\r\nbody\r\n" });
  expect(replies.at(-1)?.code).toBe(250);
  client.close();
  await server.stop();
  const stored = await readFile(path.join(dir, "out.eml"), "utf8");
  return stored.split("\r\n").find((line) => line.startsWith("Received:"))!;
}

test("reverse DNS name appears in Received", async () => {
  answer = "name";
  expect(await receivedLine()).toBe("Received: from client.example (client.ptr.test [127.0.0.1])");
});

test("invalid PTR name is ignored", async () => {
  answer = "junk";
  expect(await receivedLine()).toBe("Received: from client.example ([127.0.0.1])");
});

test("silent DNS server delays the greeting only by the timeout", async () => {
  answer = "silent";
  expect(await receivedLine()).toBe("Received: from client.example ([127.0.0.1])");
});
