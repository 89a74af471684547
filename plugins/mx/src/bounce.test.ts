import { expect, test } from "vitest";
import { buildBounce, describeDuration } from "./bounce.js";
import type { FailedRecipient } from "./store.js";

function bounceFor(failed: FailedRecipient[]): string {
  return buildBounce({
    sender: "alice@local.test",
    hostname: "mx.local.test",
    arrivalDate: new Date(Date.UTC(2026, 0, 5, 9, 0, 0)),
    now: new Date(Date.UTC(2026, 0, 5, 10, 0, 0)),
    failed,
    headers: "Subject: hello\r\n",
  });
}

test("diagnostic code is the remote reply", () => {
  const text = bounceFor([
    { recipient: "x@far.test", code: 535, enhanced: "4.0.0", response: "535 Authentication credentials invalid", remoteMta: "relay.far.test" },
  ]);
  expect(text).toContain("\r\nDiagnostic-Code: smtp; 535 Authentication credentials invalid\r\n");
  expect(text).toContain("\r\nRemote-MTA: dns; relay.far.test\r\n");
  expect(text).toContain("\r\nStatus: 4.0.0\r\n");
  expect(text).toContain("\r\n<x@far.test>: host relay.far.test said: 535 Authentication credentials invalid\r\n");
});

test("error without a reply gets a private type", () => {
  const text = bounceFor([
    {
      recipient: "x@far.test",
      code: 0,
      enhanced: "4.4.1",
      response: "mx.far.test [192.0.2.1]: connect ECONNREFUSED 192.0.2.1:25 (gave up after 5 days)",
    },
  ]);
  expect(text).toContain(
    "\r\nDiagnostic-Code: X-Mailroom; mx.far.test [192.0.2.1]: connect ECONNREFUSED 192.0.2.1:25 (gave up after 5 days)\r\n",
  );
  expect(text).not.toMatch(/\d{3} 4\.4\.1 mx\.far\.test/);
  expect(text).not.toContain("Remote-MTA:");
  expect(text).toContain("\r\n<x@far.test>: mx.far.test [192.0.2.1]: connect ECONNREFUSED");
});

test("local failure written as a reply gets a private type", () => {
  const text = bounceFor([{ recipient: "x@nx.test", code: 550, enhanced: "5.1.2", response: "550 5.1.2 Domain nx.test does not exist" }]);
  expect(text).toContain("\r\nDiagnostic-Code: X-Mailroom; 550 5.1.2 Domain nx.test does not exist\r\n");
  expect(text).not.toContain("Remote-MTA:");
  expect(text).toContain("\r\n<x@nx.test>: 550 5.1.2 Domain nx.test does not exist\r\n");
});

test("Message-ID comes from the given time", () => {
  const text = bounceFor([]);
  const now = Date.UTC(2026, 0, 5, 10, 0, 0);
  expect(text).toMatch(new RegExp(`\r\nMessage-ID: <${now.toString(36)}\\.[0-9a-f]{12}@mx\\.local\\.test>\r\n`));
});

test.each([
  [0, "0 seconds"],
  [1000, "1 second"],
  [59_999, "59 seconds"],
  [60_000, "60 seconds"],
  [120_000, "2 minutes"],
  [10 * 60_000, "10 minutes"],
  [90 * 60_000, "90 minutes"],
  [2 * 3_600_000, "2 hours"],
  [47 * 3_600_000 + 59 * 60_000, "47 hours"],
  [2 * 86_400_000, "2 days"],
  [5 * 86_400_000 + 1234, "5 days"],
])("describeDuration(%i) is %s", (milliseconds, text) => {
  expect(describeDuration(milliseconds)).toBe(text);
});

test("multi-line reply kept on one line", () => {
  const text = bounceFor([
    { recipient: "x@far.test", code: 550, enhanced: "5.7.1", response: "550-5.7.1 Policy\r\n550 5.7.1 rejected", remoteMta: "mx.far.test" },
  ]);
  expect(text).toContain("\r\nDiagnostic-Code: smtp; 550-5.7.1 Policy 550 5.7.1 rejected\r\n");
});

/** Returns the body of the message/delivery-status part. */
function statusPart(text: string): string {
  const start = text.indexOf("Content-Type: message/delivery-status");
  const body = text.indexOf("\r\n\r\n", start) + 4;
  return text.slice(body, text.indexOf("\r\n--", body));
}

test("non-ASCII recipient in the 7-bit xtext form", () => {
  const text = bounceFor([{ recipient: "bøb+x=y@bücher.example", code: 550, enhanced: "5.6.7", response: "mx.far.test does not offer SMTPUTF8" }]);
  expect(text).toContain("\r\nFinal-Recipient: utf-8; b\\x{F8}b\\x{2B}x\\x{3D}y@b\\x{FC}cher.example\r\n");
  expect(statusPart(text)).toMatch(/^[\x00-\x7f]*$/);
  expect(text).toContain("\r\n<bøb+x=y@bücher.example>: mx.far.test does not offer SMTPUTF8\r\n");
});

test("ASCII local part with A-label domain", () => {
  const text = bounceFor([{ recipient: "bob@bücher.example", code: 550, enhanced: "5.1.1", response: "550 5.1.1 no such user", remoteMta: "mx.far.test" }]);
  expect(text).toContain("\r\nFinal-Recipient: rfc822; bob@xn--bcher-kva.example\r\n");
});

test("UTF-8 reply text kept out of the status part", () => {
  const text = bounceFor([{ recipient: "x@far.test", code: 550, enhanced: "5.7.1", response: "550 5.7.1 refusé", remoteMta: "mx.far.test" }]);
  expect(text).toContain("\r\nDiagnostic-Code: smtp; 550 5.7.1 refus?\r\n");
  expect(text).toContain("host mx.far.test said: 550 5.7.1 refusé\r\n");
  expect(statusPart(text)).toMatch(/^[\x00-\x7f]*$/);
});

test("UTF-8 headers returned as message/global-headers", () => {
  const input = {
    sender: "ålice@bücher.example",
    hostname: "mx.local.test",
    arrivalDate: new Date(Date.UTC(2026, 0, 5, 9, 0, 0)),
    now: new Date(Date.UTC(2026, 0, 5, 10, 0, 0)),
    failed: [{ recipient: "x@far.test", code: 550, enhanced: "5.1.1", response: "550 5.1.1 no such user" }],
    headers: "Subject: héllo\r\n",
  };
  const text = buildBounce(input);
  expect(text).toContain("\r\nContent-Type: message/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n");
  expect(text).not.toContain("text/rfc822-headers");
  expect(text).toContain("\r\nSubject: héllo\r\n");
  expect(text).toContain("\r\nTo: <ålice@bücher.example>\r\n");
  expect(buildBounce({ ...input, sender: "alice@bücher.example", headers: "Subject: hello\r\n" })).toContain(
    "\r\nTo: <alice@xn--bcher-kva.example>\r\n",
  );
  expect(bounceFor([])).toContain("\r\nContent-Type: text/rfc822-headers\r\n");
});

test("long reply is folded within the line limit", () => {
  const lines = Array.from({ length: 20 }, (_, index) => `550${index === 19 ? " " : "-"}5.7.1 ${"policy text ".repeat(8)}${index}`);
  const response = lines.join("\r\n");
  const unbroken = `550 5.7.1 ${"x".repeat(1200)}`;
  const text = bounceFor([
    { recipient: "x@far.test", code: 550, enhanced: "5.7.1", response, remoteMta: "mx.far.test" },
    { recipient: "y@far.test", code: 550, enhanced: "5.7.1", response: unbroken, remoteMta: "mx.far.test" },
  ]);
  const replyLines = text.split("\r\n").filter((line) => /policy|xxx/.test(line));
  expect(Math.max(...replyLines.map((line) => line.length))).toBeLessThanOrEqual(78);

  const status = text.slice(text.indexOf("Reporting-MTA:"), text.indexOf("Content-Type: text/rfc822-headers"));
  const unfolded = status.replace(/\r\n /g, " ");
  expect(unfolded).toContain(`\r\nDiagnostic-Code: smtp; ${lines.join(" ")}\r\n`);
  const cut = /\r\nDiagnostic-Code: (smtp; 550 5\.7\.1 [x ]+)\r\n/.exec(unfolded)?.[1];
  expect(cut?.replace(/ /g, "")).toBe(`smtp;5505.7.1${"x".repeat(1200)}`);
  expect(text).toContain("\r\n<x@far.test>: host mx.far.test said: 550-5.7.1 policy text");
});

test("short reply stays on one line", () => {
  const response = `550 5.7.1 ${"word ".repeat(150).trim()}`;
  const text = bounceFor([{ recipient: "x@far.test", code: 550, enhanced: "5.7.1", response, remoteMta: "mx.far.test" }]);
  expect(text).toContain(`\r\nDiagnostic-Code: smtp; ${response}\r\n`);
});
