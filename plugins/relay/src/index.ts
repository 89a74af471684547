import {
  definePlugin,
  deny,
  denySoft,
  ok,
  normalizeDomain,
  TOKENS,
  type Answer,
  type Connection,
  type DependencyContainer,
  type Logger,
  type UserDirectory,
} from "@mailroom/core";
import { DomainSet } from "./domains.js";
import { coversEverything, inNetworks, type Network } from "./networks.js";
import { relayOptions, type RelayOptions } from "./options.js";
import { decideRecipient, mayRelay, type ClientFacts } from "./policy.js";

export { DomainSet } from "./domains.js";
/** The domain normalization that every plugin shares, from @mailroom/core; re-exported for existing importers. */
export { normalizeDomain } from "@mailroom/core";
export { inNetworks, parseClientAddress, parseNetwork, type Network } from "./networks.js";
export { relayOptions, type RelayOptions } from "./options.js";
export { decideRecipient, mayRelay, type ClientFacts, type RecipientDecision } from "./policy.js";

/** The route of recipients that leave this server; plugin-mx stores it. */
export const OUTBOUND_ROUTE = "outbound";

const RELAYING_DENIED = { code: 550, enhanced: "5.7.1", message: "Relaying denied" };
const DIRECTORY_FAILED = {
  code: 451,
  enhanced: "4.3.0",
  message: "Temporary local problem, try again later",
};

/**
 * Returns a function that reads the local domains: the configured list
 * (returned as it is, so the hooks need not wait), or else the
 * UserDirectory's domains. The directory is resolved at each call, not at
 * setup, because the plugin that registers it (maildir) is usually listed
 * after this one.
 */
function localDomainSource(
  options: RelayOptions,
  container: DependencyContainer,
  logger: Logger,
): () => DomainSet | Promise<DomainSet> {
  if (options.localDomains) {
    const fixed = new DomainSet(options.localDomains);
    return () => fixed;
  }
  let warned = false;
  return async (): Promise<DomainSet> => {
    if (!container.isRegistered(TOKENS.UserDirectory, true)) {
      if (!warned) {
        warned = true;
        logger.warn(
          "localDomains is not set and no UserDirectory service is registered, so only the bare postmaster is local; set localDomains or add a plugin that provides the directory (maildir)",
        );
      }
      return new DomainSet([]);
    }
    const directory = container.resolve<UserDirectory>(TOKENS.UserDirectory);
    return new DomainSet(await directory.domains());
  };
}

export default definePlugin({
  name: "relay",
  options: relayOptions,
  setup({ options, logger, container }) {
    const networks: Network[] = options.trustedNetworks;
    for (const network of networks.filter(coversEverything)) {
      logger.warn(
        { network: network.text },
        "trustedNetworks contains a /0 range: every client of that address family may relay",
      );
    }
    const relayDomains = new DomainSet(options.relayDomains);
    const localDomains = localDomainSource(options, container, logger);

    // The network check parses the address, so its result is kept per connection.
    const trusted = new WeakMap<Connection, { address: string; trusted: boolean }>();
    const inTrustedNetwork = (connection: Connection): boolean => {
      const known = trusted.get(connection);
      if (known?.address === connection.remoteAddress) return known.trusted;
      const result = inNetworks(networks, connection.remoteAddress);
      trusted.set(connection, { address: connection.remoteAddress, trusted: result });
      return result;
    };

    const clientFacts = (connection: Connection): ClientFacts => ({
      trustedNetwork: inTrustedNetwork(connection),
      authenticated: connection.user !== undefined,
      allowAuthenticated: options.allowAuthenticated,
      // The engine's injector marks the connections of messages it generates.
      injected: connection.notes.injected === true,
    });

    /**
     * Records on the connection whether the client may relay. AUTH and
     * STARTTLS change the answer mid-connection and fire no hook of their
     * own, so every later hook refreshes it.
     */
    const refresh = (connection: Connection): ClientFacts => {
      const facts = clientFacts(connection);
      connection.relaying = mayRelay(facts);
      return facts;
    };

    const directoryFailed = (error: unknown, log: Logger) => {
      log.error({ err: error, plugin: "relay" }, "cannot read the local domains from the UserDirectory");
      return denySoft(DIRECTORY_FAILED);
    };

    /**
     * Runs `decide` with the local domains: at once when they are
     * configured, after the UserDirectory lookup otherwise.
     */
    const withLocalDomains = (
      transaction: { readonly logger: Logger },
      decide: (local: DomainSet) => Answer | undefined,
    ): Answer | undefined | Promise<Answer | undefined> => {
      let local: DomainSet | Promise<DomainSet>;
      try {
        local = localDomains();
      } catch (error) {
        return directoryFailed(error, transaction.logger);
      }
      if (local instanceof Promise) return local.then(decide, (error: unknown) => directoryFailed(error, transaction.logger));
      return decide(local);
    };

    return {
      connect({ connection }) {
        refresh(connection);
      },
      vrfy({ connection }) {
        refresh(connection);
      },
      expn({ connection }) {
        refresh(connection);
      },

      mail({ connection, transaction, address }) {
        const facts = refresh(connection);
        if (!options.localSendersRequireAuth || address === null) return undefined;
        if (facts.trustedNetwork || facts.authenticated) return undefined;
        return withLocalDomains(transaction, (local) => {
          if (!local.has(address.domain)) return undefined;
          transaction.logger.info(
            { plugin: "relay", remote: connection.remoteAddress, sender: address.address },
            "local sender without authentication rejected",
          );
          return deny({
            code: 550,
            enhanced: "5.7.1",
            message: "Authentication required for this sender address",
          });
        });
      },

      rcpt({ connection, transaction, address }) {
        const facts = refresh(connection);
        const domain = normalizeDomain(address.domain) ?? address.domain;
        return withLocalDomains(transaction, (local) => {
          const decision = decideRecipient(domain, { local, relay: relayDomains }, facts);
          switch (decision) {
            case "local":
              return undefined;
            case "relay-domain":
            case "relay-client":
              return ok({ route: OUTBOUND_ROUTE });
            case "denied":
              transaction.logger.info(
                {
                  plugin: "relay",
                  remote: connection.remoteAddress,
                  sender: transaction.sender?.address ?? "",
                  recipient: address.address,
                },
                "relaying denied",
              );
              return deny(RELAYING_DENIED);
          }
        });
      },
    };
  },
});
