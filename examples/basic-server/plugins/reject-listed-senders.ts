import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { definePlugin, deny, normalizeDomain, z } from "@mailroom/core";

/**
 * Returns a listed address in the form the engine gives the sender's
 * address: lower case here, with the domain as normalizeDomain spells it
 * (A-labels, no trailing dot), so `a@bücher.example` matches too.
 */
function comparable(text: string): string {
  const lower = text.toLowerCase();
  const at = lower.lastIndexOf("@");
  if (at < 0) return lower;
  const domain = lower.slice(at + 1);
  return `${lower.slice(0, at)}@${normalizeDomain(domain) ?? domain}`;
}

/** Rejects envelope senders listed in a text file, one address per line. */
export default definePlugin({
  name: "reject-listed-senders",
  options: z.object({ file: z.string() }),
  setup({ options, configDir }) {
    const lines = readFileSync(resolve(configDir, options.file), "utf8").split("\n");
    const entries = lines.map((line) => line.replace(/#.*/, "").trim()).filter(Boolean);
    const listed = new Set(entries.map(comparable));
    const rejected = deny({ code: 550, enhanced: "5.7.1", message: "Sender address rejected by local policy" });
    return { mail: ({ address }) => (address && listed.has(address.address.toLowerCase()) ? rejected : undefined) };
  },
});
