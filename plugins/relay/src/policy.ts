import type { DomainSet } from "./domains.js";

/** What the relay policy makes of one recipient. */
export type RecipientDecision =
  /** A local domain (or a bare postmaster): the mailbox owner decides. */
  | "local"
  /** A domain this server accepts and forwards (backup MX, gateway). */
  | "relay-domain"
  /** Another domain, and this client may relay. */
  | "relay-client"
  /** Another domain, and this client may not relay. */
  | "denied";

/** The facts about a client that decide whether it may relay. */
export interface ClientFacts {
  /** The client address is in `trustedNetworks`. */
  trustedNetwork: boolean;
  /** The client completed AUTH (`connection.user` is set). */
  authenticated: boolean;
  /** The `allowAuthenticated` option. */
  allowAuthenticated: boolean;
  /** The message comes from this server itself (a bounce injected by the engine). */
  injected?: boolean;
}

/** Returns true when the client may send to any domain. */
export function mayRelay(client: ClientFacts): boolean {
  if (client.injected) return true;
  return client.trustedNetwork || (client.allowAuthenticated && client.authenticated);
}

/**
 * Decides a recipient by its domain alone. The local part plays no part, so
 * `victim%evil.example@local.example` and `evil.example!victim@local.example`
 * are local recipients, and the postmaster of another domain is treated like
 * any other remote recipient. The empty domain is the bare `<postmaster>`
 * recipient, which RFC 5321 section 4.5.1 makes local on every server.
 */
export function decideRecipient(
  domain: string,
  domains: { local: DomainSet; relay: DomainSet },
  client: ClientFacts,
): RecipientDecision {
  if (domain === "" || domains.local.has(domain)) return "local";
  if (domains.relay.has(domain)) return "relay-domain";
  return mayRelay(client) ? "relay-client" : "denied";
}
