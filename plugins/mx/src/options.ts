import { checkDomainName, domainName, duration, z } from "@mailroom/core";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Default retry delays: a few minutes first, then growing, the last one repeats. */
export const DEFAULT_RETRY = [5 * MINUTE, 10 * MINUTE, 20 * MINUTE, 40 * MINUTE, HOUR, 2 * HOUR, 4 * HOUR];

/**
 * Shortest delay allowed between two attempts, in milliseconds. A delay of 0
 * would retry a failing destination in a tight loop. RFC 5321 section
 * 4.5.4.1 advises at least 30 minutes in general, and the floor is lower so
 * that tests and private networks can retry within seconds.
 */
export const MIN_RETRY_DELAY = 1000;

const tlsMode = z.enum(["none", "opportunistic", "required"]);

/** A static next hop: a route for one domain or the smarthost. */
export const targetSchema = z.strictObject({
  /** Host name or IP address; a name is resolved through the DnsResolver (A/AAAA). */
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(25),
  tls: tlsMode.default("opportunistic"),
  auth: z.strictObject({ user: z.string().min(1), pass: z.string() }).optional(),
  /** Allow loopback and this host's own addresses for this route (the loop guard skips it). */
  allowLocal: z.boolean().default(false),
});

export const optionsSchema = z.strictObject({
  /** Folder of the queue records, relative to the config file. */
  queueDir: z.string().min(1).default("./queue"),
  /** Delays between attempts, each at least MIN_RETRY_DELAY; the last one repeats. */
  retry: z.array(duration({ min: MIN_RETRY_DELAY })).min(1).default(DEFAULT_RETRY),
  /**
   * Give up and bounce a message that could not be delivered for this long.
   * It is compared with timestamps and never given to a timer, so it may
   * pass the timer limit of about 24.8 days.
   */
  maxQueueLifetime: duration({ min: 1, max: 365 * DAY }).default(5 * DAY),
  concurrency: z
    .strictObject({
      /** Connections open at once, over all destinations. */
      total: z.number().int().min(1).default(20),
      /** Connections open at once to one destination domain. */
      perDomain: z.number().int().min(1).default(2),
    })
    .prefault({}),
  /** Messages sent over one connection before it is closed. */
  maxMessagesPerConnection: z.number().int().min(1).default(50),
  /** Recipients per SMTP transaction; a message with more goes in several transactions. */
  maxRecipientsPerTransaction: z.number().int().min(1).default(50),
  /**
   * Maximum number of mail exchanger addresses (from DNS or a get_mx
   * answer) that one delivery attempt tries, most preferred first. The destination's DNS
   * picks these hosts, so without a limit one message could make this
   * server connect to any number of addresses.
   */
  maxMxAddresses: z.number().int().min(1).default(10),
  /**
   * Static next hops per destination domain, which override DNS. The keys
   * come out in the form of normalizeDomain (lower case, A-labels).
   */
  routes: z
    .record(z.string(), targetSchema)
    .default({})
    .transform((routes, context) => {
      const normalized: Record<string, Target> = {};
      const written = new Map<string, string>();
      for (const [name, target] of Object.entries(routes)) {
        const checked = checkDomainName(name, { literals: true });
        if ("error" in checked) {
          context.addIssue({ code: "custom", path: [name], message: checked.error });
          continue;
        }
        const first = written.get(checked.domain);
        if (first !== undefined) {
          context.addIssue({
            code: "custom",
            path: [name],
            message: `domain ${checked.domain} is listed twice, as "${first}" and "${name}"`,
          });
          continue;
        }
        written.set(checked.domain, name);
        normalized[checked.domain] = target;
      }
      return normalized;
    }),
  /** Next hop for every domain without a route of its own. */
  smarthost: targetSchema.optional(),
  /** Name sent with EHLO; defaults to server.hostname. */
  heloName: z.string().min(1).optional(),
  /** Port of the remote mail exchangers (25; tests use another). */
  port: z.number().int().min(1).max(65535).default(25),
  tls: z
    .strictObject({
      /** Domains that get verified TLS or nothing: no plaintext, delivery is deferred instead. */
      requireFor: z.array(domainName({ literals: true })).default([]),
    })
    .prefault({}),
  /** Allow destinations on loopback or this host's addresses (tests on 127.0.0.1). */
  allowLocalDestinations: z.boolean().default(false),
  /** false: only accept into the queue, another process delivers. */
  deliver: z.boolean().default(true),
  /** How often the queue folder is scanned for records other processes wrote. */
  pollInterval: duration({ min: 1 }).default(60_000),
  timeouts: z
    .strictObject({
      connect: duration({ min: 1 }).default(30_000),
      greeting: duration({ min: 1 }).default(60_000),
      socket: duration({ min: 1 }).default(300_000),
    })
    .prefault({}),
});

export type MxOptions = z.output<typeof optionsSchema>;
export type Target = z.output<typeof targetSchema>;
export type TlsMode = z.output<typeof tlsMode>;

/**
 * Returns the delay before the attempt after `attempts` failed ones: the
 * schedule's entry for it, or its last entry once the schedule is used up.
 * A schedule that did not pass the options schema still waits at least
 * MIN_RETRY_DELAY.
 */
export function retryDelay(retry: readonly number[], attempts: number): number {
  const index = Math.min(Math.max(attempts - 1, 0), retry.length - 1);
  const delay = retry[index];
  return delay !== undefined && delay > MIN_RETRY_DELAY ? delay : MIN_RETRY_DELAY;
}
