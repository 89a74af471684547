import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { definePlugin, deny, z } from "@mailroom/core";

/** Rejects envelope senders listed in a text file, one address per line. */
export default definePlugin({
  name: "reject-listed-senders",
  options: z.object({ file: z.string() }),
  setup({ options, configDir }) {
    const lines = readFileSync(resolve(configDir, options.file), "utf8").split("\n");
    const listed = new Set(lines.map((line) => line.replace(/#.*/, "").trim().toLowerCase()).filter(Boolean));
    const rejected = deny({ code: 550, enhanced: "5.7.1", message: "Sender address rejected by local policy" });
    return { mail: ({ address }) => (address && listed.has(address.address.toLowerCase()) ? rejected : undefined) };
  },
});
