import { expect, test } from "vitest";
import { buildBounce } from "./bounce.js";
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
      response: "mx.far.test [192.0.2.1]: connect ECONNREFUSED 192.0.2.1:25 (gave up after 7200 minutes)",
      remoteMta: "mx.far.test",
    },
  ]);
  expect(text).toContain(
    "\r\nDiagnostic-Code: X-Mailroom; mx.far.test [192.0.2.1]: connect ECONNREFUSED 192.0.2.1:25 (gave up after 7200 minutes)\r\n",
  );
  expect(text).not.toMatch(/\d{3} 4\.4\.1 mx\.far\.test/);
  expect(text).toContain("\r\n<x@far.test>: mx.far.test [192.0.2.1]: connect ECONNREFUSED");
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
