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
