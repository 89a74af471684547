import { definePlugin, deny, z } from "@mailroom/core";

const rule = z.object({
  /** Header name, case-insensitive, for example "X-Spam-Flag". */
  header: z.string().min(1),
  /**
   * Regular expression tested, ignoring case, against each value of that
   * header, decoded: unfolded, with RFC 2047 encoded-words such as
   * `=?UTF-8?B?...?=` decoded.
   */
  matches: z.string().refine(
    (pattern) => {
      try {
        new RegExp(pattern);
        return true;
      } catch {
        return false;
      }
    },
    { message: "expected a valid regular expression" },
  ),
  /** Reply text; keep it generic. */
  message: z.string().default("Message rejected by content policy"),
});

/**
 * Rejects a message after DATA when one of its headers matches a rule, and
 * records the matching rule in the transaction notes for later plugins.
 */
export default definePlugin({
  name: "reject-by-header",
  options: z.object({ rules: z.array(rule).min(1) }),
  setup({ options, logger }) {
    const rules = options.rules.map((entry) => ({ ...entry, pattern: new RegExp(entry.matches, "i") }));
    return {
      data_post({ message, transaction }) {
        for (const entry of rules) {
          const values = message.headers.getAll(entry.header);
          if (!values.some((value) => entry.pattern.test(value))) continue;
          transaction.notes.rejectedByHeader = entry.header;
          logger.info({ txn: transaction.id, header: entry.header }, "message matched a header rule");
          return deny({ code: 550, enhanced: "5.7.1", message: entry.message });
        }
        return undefined;
      },
    };
  },
});
