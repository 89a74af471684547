import { domainName, z } from "@mailroom/core";
import { parseNetwork, type Network } from "./networks.js";

const domain = domainName({ literals: true });

const network = z.string().transform((value, context): Network => {
  try {
    return parseNetwork(value);
  } catch (error) {
    context.addIssue({ code: "custom", message: (error as Error).message });
    return z.NEVER;
  }
});

export const relayOptions = z.strictObject({
  /**
   * Domains whose mail this server stores itself. When omitted, the domains
   * of the UserDirectory service (the maildir plugin's domains by default),
   * read at every recipient.
   */
  localDomains: z.array(domain).optional(),
  /** Domains accepted from anyone and forwarded (a backup MX or a gateway). */
  relayDomains: z.array(domain).default([]),
  /** Client networks (CIDR) that may send to any domain. */
  trustedNetworks: z.array(network).default([]),
  /** Authenticated clients may send to any domain. */
  allowAuthenticated: z.boolean().default(true),
  /**
   * Clients outside trustedNetworks must authenticate before they may use a
   * local domain in MAIL FROM.
   */
  localSendersRequireAuth: z.boolean().default(false),
});

export type RelayOptions = z.output<typeof relayOptions>;
