import type { ListenerConfig, ServerConfig } from "./schema.js";

/** A listener that cannot work as configured, and why. */
export interface ListenerWarning {
  address: string;
  message: string;
}

/**
 * Lists `requireAuth` listeners on which no client can ever send mail: no
 * plugin handles the auth hook, or AUTH is never offered because the
 * connection cannot be encrypted (no implicit TLS, no server.tls for
 * STARTTLS) and allowInsecureAuth is off. `mailroom check` prints these and
 * `mailroom start` logs them, with the same text.
 */
export function listenerWarnings(
  server: ServerConfig,
  listeners: readonly ListenerConfig[],
  handlesAuth: boolean,
): ListenerWarning[] {
  const warnings: ListenerWarning[] = [];
  for (const listener of listeners) {
    if (!listener.requireAuth) continue;
    if (!handlesAuth) {
      warnings.push({
        address: listener.address,
        message: "listener requires AUTH but no plugin handles the auth hook, so every MAIL gets 530",
      });
    }
    const encrypted = listener.implicitTls || server.tls !== undefined;
    if (!encrypted && !server.allowInsecureAuth) {
      warnings.push({
        address: listener.address,
        message:
          "listener requires AUTH but offers it only over TLS, and server.tls is not configured for STARTTLS, " +
          "so every AUTH gets 538 and every MAIL 530; configure server.tls, or set server.allowInsecureAuth",
      });
    }
  }
  return warnings;
}
