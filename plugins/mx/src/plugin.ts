import { unlink } from "node:fs/promises";
import path from "node:path";
import {
  definePlugin,
  denySoft,
  normalizeDomain,
  ok,
  systemClock,
  TOKENS,
  type Clock,
  type DnsResolver,
  type HookService,
  type Logger,
  type MessageInjector,
  type UserDirectory,
} from "@mailroom/core";
import { hasEightBitHeader } from "./international.js";
import { optionsSchema } from "./options.js";
import { DiskOutboundQueue } from "./queue.js";
import { Scheduler } from "./scheduler.js";
import { QueueStore, type AddedMessage } from "./store.js";

/** The route that relayed recipients are accepted with: `ok({ route: "outbound" })`. */
export const OUTBOUND_ROUTE = "outbound";

function optional<T>(resolve: () => T): () => T | undefined {
  return () => {
    try {
      return resolve();
    } catch {
      return undefined;
    }
  };
}

export default definePlugin({
  name: "mx",
  options: optionsSchema,
  async setup(context) {
    const { options, logger, container } = context;
    const clock = container.isRegistered(TOKENS.Clock, true)
      ? container.resolve<Clock>(TOKENS.Clock)
      : systemClock;
    const store = new QueueStore(path.resolve(context.configDir, options.queueDir), logger);
    // The folders are created on first use, and at the latest in start(), so
    // that `mailroom check` and a rejected reload leave the file system as it
    // was. A plugin that starts before this one may already queue a message.
    let initialized: Promise<void> | undefined;
    const ready = () => (initialized ??= store.init());

    const scheduler = new Scheduler({
      store,
      options,
      hostname: context.config.server.hostname,
      clock,
      logger,
      dns: () => container.resolve<DnsResolver>(TOKENS.DnsResolver),
      hooks: optional(() => container.resolve<HookService>(TOKENS.Hooks)),
      injector: optional(() => container.resolve<MessageInjector>(TOKENS.Injector)),
      directory: () =>
        container.isRegistered(TOKENS.UserDirectory, true)
          ? container.resolve<UserDirectory>(TOKENS.UserDirectory)
          : undefined,
    });
    /** Removes the records of a message that the engine rejected after they were written. */
    const removeRecords = async (ids: string[], claimed: boolean, log: Logger) => {
      for (const id of ids) {
        try {
          if (claimed) await store.finish(id);
          else await unlink(store.activePath(id));
        } catch (error) {
          // NOTE: a record another process claimed meanwhile is delivered, and the client's retry duplicates it.
          log.error({ err: error, id }, "record of a rejected message not removed from the queue");
        }
      }
      log.info({ removed: ids }, "message rejected after it was queued, records removed");
    };
    const queue = new DiskOutboundQueue(store, clock, () => scheduler.kick(), ready);
    let stopWatching: () => void = () => undefined;
    container.register(TOKENS.OutboundQueue, { useValue: queue });
    context.registerRoute(OUTBOUND_ROUTE);

    return {
      // Deliveries begin only once this config is in service, so a reload
      // that is rejected never sends with its options.
      async start() {
        await ready();
        if (!options.deliver) return;
        scheduler.start();
        stopWatching = store.watchScanRequests(() => scheduler.kick());
      },
      async queue({ message, recipients, transaction, accepted }) {
        // One record per destination domain, so both spellings of an international domain share one.
        const domains = new Map<string, string[]>();
        for (const recipient of recipients) {
          const domain = normalizeDomain(recipient.address.domain) ?? recipient.address.domain.toLowerCase();
          const list = domains.get(domain) ?? [];
          if (!list.includes(recipient.address.address)) list.push(recipient.address.address);
          domains.set(domain, list);
        }
        // A process that delivers takes its new records straight over,
        // claimed and in memory, so no other process sends them before the
        // engine accepts the message. The others write to active/.
        const deliverHere = scheduler.accepting;
        let added: AddedMessage;
        try {
          // A message that the engine keeps in memory is written with one call.
          const copy = message.storedCopyBytes({ returnPath: false }) ?? message.storedCopy({ returnPath: false });
          // NOTE: plugins see the first 1 MiB of the header block, so UTF-8 only past that is not noticed.
          const utf8Headers =
            transaction.senderParams.SMTPUTF8 === true &&
            hasEightBitHeader([message.received, ...message.headers.list().map((field) => field.line)]);
          const body = transaction.senderParams.BODY;
          const body8BitMime = typeof body === "string" && body.toUpperCase() === "8BITMIME";
          await ready();
          added = await store.add(
            copy,
            { sender: transaction.sender?.address ?? "", domains, now: clock.now(), utf8Headers, body8BitMime },
            { claim: deliverHere },
          );
        } catch (error) {
          transaction.logger.error({ err: error }, "outbound queue write failed");
          if ((error as { code?: string }).code === "ENOSPC") {
            return denySoft({ code: 452, enhanced: "4.3.1", message: "Insufficient system storage" });
          }
          return denySoft({ code: 451, enhanced: "4.3.0", message: "Message not queued, try again later" });
        }
        const ids = added.records.map((record) => record.id);
        void accepted.then(async (yes) => {
          if (yes) {
            // Checked first, because the transaction's logger is made on first use.
            if (transaction.logs("info")) transaction.logger.info({ queued: ids }, "queued for outbound delivery");
            if (deliverHere) scheduler.accept(added);
            return;
          }
          await removeRecords(ids, deliverHere, transaction.logger);
        });
        return ok();
      },
      async close() {
        stopWatching();
        await scheduler.stop();
      },
    };
  },
});
