import { expect, test } from "vitest";
import { hasEightBitHeader, planEnvelope } from "./international.js";

test("ASCII envelope needs no SMTPUTF8", () => {
  const plan = planEnvelope({ sender: "alice@bücher.example", recipients: ["bob@far.test"], utf8Headers: false }, false);
  expect(plan.from).toBe("alice@xn--bcher-kva.example");
  expect(plan.to).toEqual(["bob@far.test"]);
  expect(plan.smtpUtf8).toBe(false);
  expect(plan.refused).toEqual([]);
});

test("non-ASCII recipient with and without server support", () => {
  const job = { sender: "alice@local.test", recipients: ["bøb@far.test", "carol@far.test"], utf8Headers: false };
  const offered = planEnvelope(job, true);
  expect(offered.to).toEqual(["bøb@far.test", "carol@far.test"]);
  expect(offered.smtpUtf8).toBe(true);
  expect(offered.refused).toEqual([]);
  const missing = planEnvelope(job, false);
  expect(missing.to).toEqual(["carol@far.test"]);
  expect(missing.smtpUtf8).toBe(false);
  expect(missing.refused).toEqual([{ recipient: "bøb@far.test", need: "recipient" }]);
});

test("non-ASCII sender refuses every recipient without support", () => {
  const plan = planEnvelope({ sender: "ålice@local.test", recipients: ["bob@far.test", "carol@far.test"], utf8Headers: false }, false);
  expect(plan.to).toEqual([]);
  expect(plan.refused.map((item) => item.need)).toEqual(["sender", "sender"]);
});

test("UTF-8 headers need SMTPUTF8 for an ASCII envelope", () => {
  const job = { sender: "", recipients: ["bob@far.test"], utf8Headers: true };
  expect(planEnvelope(job, true).smtpUtf8).toBe(true);
  expect(planEnvelope(job, true).from).toBe(false);
  expect(planEnvelope(job, false).refused).toEqual([{ recipient: "bob@far.test", need: "headers" }]);
});

test("both spellings of a recipient go once", () => {
  const plan = planEnvelope({ sender: "a@local.test", recipients: ["bob@bücher.example", "bob@xn--bcher-kva.example"], utf8Headers: false }, true);
  expect(plan.to).toEqual(["bob@xn--bcher-kva.example"]);
  expect(plan.recipientsOf.get("bob@xn--bcher-kva.example")).toEqual(["bob@bücher.example", "bob@xn--bcher-kva.example"]);
});

test("eight-bit header detection", () => {
  expect(hasEightBitHeader(["Subject: plain", "From: a@b.test"])).toBe(false);
  expect(hasEightBitHeader(["Subject: caf\u00c3\u00a9"])).toBe(true);
});
