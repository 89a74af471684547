import fc from "fast-check";
import { expect, test } from "vitest";
import { formatAddress, parsePath, type Address } from "./address.js";

const RUNS = Number(process.env.MAILROOM_FUZZ_RUNS ?? 0) || 2000;

const atext = fc.constantFrom(..."abcXYZ09!#$%&'*+-/=?^_`{|}~".split(""));
const atom = fc.string({ unit: atext, minLength: 1, maxLength: 8 });
const dotString = fc.array(atom, { minLength: 1, maxLength: 4 }).map((atoms) => atoms.join("."));
/** Any printable ASCII, the characters that need quoting included. */
const printable = fc.constantFrom(..." \"\\@<>.,:;[]()a1é\u0000\r\n".split(""));
const quotedValue = fc.string({ unit: printable, maxLength: 12 });
const label = fc.stringMatching(/^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?$/);
const hostname = fc.array(label, { minLength: 1, maxLength: 4 }).map((labels) => labels.join("."));
const literal = fc.oneof(
  fc.ipV4().map((ip) => `[${ip}]`),
  fc.ipV6().map((ip) => `[IPv6:${ip}]`),
);
const domain = fc.oneof({ weight: 4, arbitrary: hostname }, { weight: 1, arbitrary: literal });

/** Writes a local part the way a client might: bare, quoted, or quoted with needless escapes. */
function spell(local: string, style: number): string {
  const bare = /^[\w!#$%&'*+\-/=?^`{|}~]+(?:\.[\w!#$%&'*+\-/=?^`{|}~]+)*$/.test(local);
  if (style === 0 && bare) return local;
  const escape = style !== 2 ? /(["\\])/g : /([^])/g;
  return `"${local.replace(escape, "\\$1")}"`;
}

const route = fc.array(hostname, { maxLength: 2 }).map((hops) =>
  hops.length ? `${hops.map((hop) => `@${hop}`).join(",")}:` : "",
);

/** A path built from known parts, so the parse can be compared with what was meant. */
const knownPath = fc
  .record({
    local: fc.oneof(dotString, quotedValue),
    style: fc.integer({ min: 0, max: 2 }),
    domain,
    route,
  })
  .map(({ local, style, domain: host, route: hops }) => ({
    local,
    domain: host,
    path: `${hops}${spell(local, style)}@${host}`,
  }));

/** A known path with a few characters replaced, inserted or deleted. */
const mutated = fc
  .tuple(knownPath, fc.array(fc.tuple(fc.nat(), fc.nat(2), printable), { maxLength: 3 }))
  .map(([known, edits]) => {
    let text = known.path;
    for (const [position, kind, char] of edits) {
      const at = position % (text.length + 1);
      if (kind === 0) text = text.slice(0, at) + char + text.slice(at);
      else if (kind === 1) text = text.slice(0, at) + text.slice(at + 1);
      else text = text.slice(0, at) + char + text.slice(at + 1);
    }
    return text;
  });

function accept(path: string, utf8: boolean): Address | undefined {
  const result = parsePath(path, { sender: false, utf8 });
  return result && !("error" in result) ? result : undefined;
}

test("a parsed path prints back to a path that parses to the same address", () => {
  fc.assert(
    fc.property(fc.oneof(knownPath.map((known) => known.path), mutated, fc.string()), fc.boolean(), (path, utf8) => {
      const address = accept(path, utf8);
      if (!address) return;
      const printed = formatAddress(address.local, address.domain);
      expect(printed).toBe(address.address);
      const again = accept(printed, utf8);
      expect(again, `${path} printed as ${printed}`).toBeDefined();
      expect(again!.local).toBe(address.local);
      expect(again!.domain).toBe(address.domain);
      expect(again!.address).toBe(printed);
    }),
    { numRuns: RUNS },
  );
});

test("a path built from known parts parses to exactly those parts, or is refused", () => {
  fc.assert(
    fc.property(knownPath, fc.boolean(), (known, utf8) => {
      const address = accept(known.path, utf8);
      if (!address) return;
      expect(address.local).toBe(known.local);
      const expected = known.domain.startsWith("[IPv6:")
        ? `[IPv6:${known.domain.slice(6).toLowerCase()}`
        : known.domain.toLowerCase();
      expect(address.domain).toBe(expected);
    }),
    { numRuns: RUNS },
  );
});

test("ordinary addresses are never refused", () => {
  fc.assert(
    fc.property(dotString, hostname, (local, host) => {
      fc.pre(local.length <= 64);
      expect(accept(`${local}@${host}`, false)?.address).toBe(`${local}@${host.toLowerCase()}`);
    }),
    { numRuns: RUNS },
  );
});
