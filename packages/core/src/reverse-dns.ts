import type { Logger } from "pino";
import type { DnsResolver } from "./services/dns.js";

/** A host name as RFC 1123 allows it; anything else in a PTR record is ignored. */
const HOST_NAME = /^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Looks up the PTR name of a client address within `timeout` ms. Returns
 * undefined when there is none, it is not a valid host name, or the lookup
 * fails or takes too long, so the greeting is never held up for longer.
 */
export async function reverseLookup(
  resolver: DnsResolver,
  address: string,
  timeout: number,
  logger: Logger,
): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), timeout);
  });
  try {
    const lookup = resolver.resolvePtr(address).then((result) => {
      if (result.status !== "found") return undefined;
      const name = result.records[0];
      return name && HOST_NAME.test(name) ? name.toLowerCase() : undefined;
    });
    return await Promise.race([lookup, deadline]);
  } catch (error) {
    logger.debug({ err: error, remote: address }, "reverse DNS lookup failed");
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}
