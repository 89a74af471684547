import { z } from "@mailroom/core";

export const vrfyOptions = z.strictObject({
  /**
   * `ambiguous`: 252 for every VRFY, with no lookup. `verify`: real answers
   * for the clients in `verifyFrom`, 252 for the others. `refuse`: 502.
   */
  mode: z.enum(["ambiguous", "verify", "refuse"]).default("ambiguous"),
  /**
   * Clients that get real answers in verify mode: `trusted` (the relay
   * plugin set `connection.relaying`) and `authenticated` (AUTH succeeded).
   */
  verifyFrom: z
    .array(z.enum(["trusted", "authenticated"]))
    .min(1, { message: "list at least one of trusted, authenticated" })
    .default(["trusted", "authenticated"]),
  /**
   * Failed VRFY and RCPT lookups (replies of 550 5.1.1) allowed on one
   * connection. The next VRFY or RCPT after that many gets 421 4.7.0 and the
   * connection is closed.
   */
  maxFailures: z.number().int().min(1).default(10),
  /** `refuse`: 502 5.5.1. `ambiguous`: 252 2.1.5. EXPN never lists members. */
  expn: z.enum(["refuse", "ambiguous"]).default("refuse"),
});

export type VrfyOptions = z.output<typeof vrfyOptions>;
