import { definePlugin, ok, z } from "@mailroom/core";

/**
 * Accepts the recipients of the listed domains on the "discard" route and
 * answers OK at queue without storing anything: the same work as Haraka's
 * rcpt_to.in_host_list with queue/discard.
 */
export default definePlugin({
  name: "bench-discard",
  options: z.strictObject({ domains: z.array(z.string().min(1)).min(1) }),
  setup(ctx) {
    const domains = new Set(ctx.options.domains.map((domain) => domain.toLowerCase()));
    ctx.registerRoute("discard");
    return {
      rcpt: ({ address }) =>
        domains.has(address.domain.toLowerCase()) ? ok({ route: "discard" }) : undefined,
      queue: () => ok(),
    };
  },
});
