import {
  definePlugin,
  deny,
  denySoft,
  denySoftDisconnect,
  ok,
  TOKENS,
  type Connection,
  type Logger,
  type UserDirectory,
} from "@mailroom/core";
import { parseVrfyArgument } from "./argument.js";
import { vrfyOptions, type VrfyOptions } from "./options.js";
import { AMBIGUOUS, verifyTarget } from "./verify.js";

export { parseVrfyArgument, type VrfyTarget } from "./argument.js";
export { vrfyOptions, type VrfyOptions } from "./options.js";
export { verifyTarget } from "./verify.js";

const REFUSED = deny({ code: 502, enhanced: "5.5.1", message: "VRFY not available" });
const EXPN_REFUSED = deny({ code: 502, enhanced: "5.5.1", message: "EXPN not available" });
const EXPN_AMBIGUOUS = ok({
  code: 252,
  enhanced: "2.1.5",
  message: "Cannot expand the list, but will accept the message",
});
const SYNTAX = deny({
  code: 501,
  enhanced: "5.5.4",
  message: "Syntax: VRFY user, VRFY user@domain or VRFY <user@domain>",
});
const LOOKUP_FAILED = denySoft({
  code: 451,
  enhanced: "4.3.0",
  message: "Cannot verify now, try again later",
});
const TOO_MANY_FAILURES = denySoftDisconnect({
  code: 421,
  enhanced: "4.7.0",
  message: "Too many unknown users, closing connection",
});

/** Returns true when the client may get real VRFY answers in verify mode. */
function mayVerify(connection: Connection, options: VrfyOptions): boolean {
  const from = options.verifyFrom;
  if (from.includes("trusted") && connection.relaying) return true;
  return from.includes("authenticated") && connection.user !== undefined;
}

export default definePlugin({
  name: "vrfy",
  options: vrfyOptions,
  setup({ options, logger, container }) {
    let warnedNoDirectory = false;

    const directory = (): UserDirectory | undefined => {
      if (container.isRegistered(TOKENS.UserDirectory, true)) {
        return container.resolve<UserDirectory>(TOKENS.UserDirectory);
      }
      if (!warnedNoDirectory) {
        warnedNoDirectory = true;
        logger.warn("mode is verify but no UserDirectory service is registered, so every VRFY gets 252");
      }
      return undefined;
    };

    /** Closes connections that have used up their failed lookups. */
    const overLimit = (connection: Connection, source: { readonly logger: Logger }) => {
      if (connection.failedLookups < options.maxFailures) return undefined;
      source.logger.info(
        { plugin: "vrfy", remote: connection.remoteAddress, failedLookups: connection.failedLookups },
        "too many failed lookups, closing connection",
      );
      return TOO_MANY_FAILURES;
    };

    return {
      // The ambiguous path makes no lookup and awaits nothing, so its reply
      // takes the same time whether or not the user exists.
      async vrfy({ connection, argument }) {
        const limit = overLimit(connection, connection);
        if (limit) return limit;
        if (options.mode === "refuse") return REFUSED;
        if (options.mode === "ambiguous" || !mayVerify(connection, options)) return AMBIGUOUS;

        const target = parseVrfyArgument(argument);
        if (!target) return SYNTAX;
        const users = directory();
        if (!users) return AMBIGUOUS;
        try {
          return await verifyTarget(target, users);
        } catch (error) {
          connection.logger.error({ err: error, plugin: "vrfy" }, "UserDirectory lookup failed");
          return LOOKUP_FAILED;
        }
      },

      expn() {
        return options.expn === "ambiguous" ? EXPN_AMBIGUOUS : EXPN_REFUSED;
      },

      rcpt({ connection, transaction }) {
        // The transaction is passed whole, so its logger is made only when used.
        return overLimit(connection, transaction);
      },
    };
  },
});
