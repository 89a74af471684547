import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFile, cp, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import nodemailer from "nodemailer";
import { SmtpTestClient } from "@mailroom/testing";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = path.join(ROOT, "packages/cli/bin/mailroom.js");

let dir: string;
let child: ChildProcess;
let port: number;
let output = "";

// The example folder is copied so that its var/ stays clean; the server runs
// as `npm start` runs it, through the mailroom command, on a free port.
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mailroom-example-"));
  for (const entry of ["mailroom.yaml", "blocked-senders.txt", "plugins"]) {
    await cp(path.join(ROOT, "examples/basic-server", entry), path.join(dir, entry), { recursive: true });
  }
  child = spawn(process.execPath, [BIN, "start", "--config", "mailroom.yaml", "--listen", "127.0.0.1:0"], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stderr!.on("data", (chunk) => (output += chunk));
  port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`example server did not start:\n${output}`)), 20_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk;
      const line = output.split("\n").find((text) => text.includes('"msg":"listening"'));
      if (!line) return;
      clearTimeout(timer);
      resolve(JSON.parse(line).port);
    });
    child.once("exit", (code) => reject(new Error(`example server exited with ${code}:\n${output}`)));
  });
});

afterAll(async () => {
  child?.kill("SIGTERM");
  await rm(dir, { recursive: true, force: true });
});

/** Reads a maildir's new/ messages with Python's mailbox module, an independent reader. */
function readMaildir(folder: string): { subject: string; returnPath: string; deliveredTo: string; first: string }[] {
  const script = `
import json, mailbox, sys
box = mailbox.Maildir(sys.argv[1], create=False)
out = []
for key in sorted(box.keys()):
    message = box[key]
    raw = box.get_bytes(key).decode("latin-1")
    out.append({"subject": message["Subject"], "returnPath": message["Return-Path"],
                "deliveredTo": message["Delivered-To"], "first": raw.split("\\r\\n")[0]})
print(json.dumps(out))
`;
  const result = spawnSync("python3", ["-c", script, folder], { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`python3 failed: ${result.stderr}`);
  return JSON.parse(result.stdout);
}

describe("example server", () => {
  test("real client delivers to alice's maildir", async () => {
    const transport = nodemailer.createTransport({ host: "127.0.0.1", port, secure: false, ignoreTLS: true });
    const info = await transport.sendMail({
      envelope: { from: "sender@remote.example", to: ["alice@example.test"] },
      raw: "From: sender@remote.example\r\nTo: alice@example.test\r\nSubject: hello alice\r\n\r\nHi.\r\n",
    });
    expect(info.accepted).toEqual(["alice@example.test"]);
    transport.close();

    const maildir = path.join(dir, "var/mail/example.test/alice/Maildir");
    expect(await readdir(path.join(maildir, "new"))).toHaveLength(1);
    const [message] = readMaildir(maildir);
    expect(message!.first).toBe("Return-Path: <sender@remote.example>");
    expect(message!.returnPath).toBe("<sender@remote.example>");
    expect(message!.deliveredTo).toBe("alice@example.test");
    expect(message!.subject).toBe("hello alice");

    const [file] = await readdir(path.join(maildir, "new"));
    const stored = await readFile(path.join(maildir, "new", file!), "utf8");
    expect(stored.split("\r\n")[1]).toBe("Delivered-To: alice@example.test");
  });

  test("unknown user gets 550 5.1.1", async () => {
    const client = await SmtpTestClient.connect(port);
    await client.command("EHLO client.example");
    await client.command("MAIL FROM:<sender@remote.example>");
    const reply = await client.command("RCPT TO:<nosuch@example.test>");
    expect(reply.code).toBe(550);
    expect(reply.enhanced).toBe("5.1.1");
    client.close();
  });

  test("other domains are not relayed and VRFY is ambiguous", async () => {
    const client = await SmtpTestClient.connect(port);
    await client.command("EHLO client.example");
    expect((await client.command("VRFY alice")).code).toBe(252);
    expect((await client.command("VRFY nosuch")).code).toBe(252);
    await client.command("MAIL FROM:<sender@remote.example>");
    const reply = await client.command("RCPT TO:<victim@elsewhere.example>");
    expect(reply.code).toBe(550);
    expect(reply.enhanced).toBe("5.7.1");
    client.close();
  });

  test("listed sender gets 550 5.7.1", async () => {
    const client = await SmtpTestClient.connect(port);
    await client.command("EHLO client.example");
    const reply = await client.command("MAIL FROM:<spammer@spam.example>");
    expect(reply.code).toBe(550);
    expect(reply.enhanced).toBe("5.7.1");
    client.close();
  });

  test("message flagged as spam is rejected after DATA", async () => {
    const client = await SmtpTestClient.connect(port);
    const replies = await client.send({
      from: "sender@remote.example",
      to: ["bob@example.test"],
      message: "Subject: offer\r\nX-Spam-Flag: YES\r\n\r\nbuy\r\n",
    });
    expect(replies.at(-1)?.code).toBe(550);
    client.close();
    const bob = path.join(dir, "var/mail/example.test/bob/Maildir/new");
    expect(await readdir(bob).catch(() => [])).toEqual([]);
  });

  test("listed sender file is re-read on SIGHUP", async () => {
    const sender = "late@spam.example";
    const before = await SmtpTestClient.connect(port);
    await before.command("EHLO client.example");
    expect((await before.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
    before.close();

    await appendFile(path.join(dir, "blocked-senders.txt"), `${sender}\n`);
    child.kill("SIGHUP");
    await expect.poll(() => output, { timeout: 10_000 }).toContain('"msg":"config reloaded"');

    const after = await SmtpTestClient.connect(port);
    await after.command("EHLO client.example");
    expect((await after.command(`MAIL FROM:<${sender}>`)).code).toBe(550);
    after.close();
  });

  test("alias info reaches alice", async () => {
    const client = await SmtpTestClient.connect(port);
    const replies = await client.send({ from: "sender@remote.example", to: ["info@example.test"], message: "Subject: for info\r\n\r\nx\r\n" });
    expect(replies.at(-1)?.code).toBe(250);
    client.close();
    const subjects = readMaildir(path.join(dir, "var/mail/example.test/alice/Maildir")).map((message) => message.subject);
    expect(subjects).toContain("for info");
  });
});

test("npm start passes SIGTERM on to the server", { timeout: 60_000 }, async () => {
  const npm = spawn("npm", ["start", "--", "--listen", "127.0.0.1:0"], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  npm.stderr!.on("data", (chunk) => (log += chunk));
  const serverPid = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start did not start the server:\n${log}`)), 45_000);
    npm.stdout!.on("data", (chunk: Buffer) => {
      log += chunk;
      const line = log.split("\n").find((text) => text.includes('"msg":"listening"'));
      if (!line) return;
      clearTimeout(timer);
      resolve(JSON.parse(line).pid);
    });
  });
  const exited = new Promise<number | null>((resolve) => npm.once("exit", resolve));
  npm.kill("SIGTERM");
  expect(await exited, log).toBe(0);
  expect(log).toContain('"msg":"server stopped"');
  // The server process itself is gone, not left running without npm.
  expect(() => process.kill(serverPid, 0)).toThrow();
});
