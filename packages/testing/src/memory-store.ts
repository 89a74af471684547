import { definePlugin, ok, type PluginDefinition } from "@mailroom/core";

/** A message that a memory store kept: the envelope of its route and the stored copy. */
export interface StoredMessage {
  /** The transaction id. */
  id: string;
  /** The envelope sender, "" for `<>`. */
  sender: string;
  route: string;
  /** The route's recipients, as canonical addresses. */
  recipients: string[];
  /** The stored copy: Return-Path, the engine's Received header, then the DATA bytes. */
  content: Buffer;
}

export interface MemoryStoreOptions {
  /** The route it registers and stores (default "memory"). */
  route?: string;
  /**
   * Accept every recipient at rcpt on that route (default true). Set it to
   * false when the plugin under test accepts the recipients itself, for
   * example plugin-relay on the route "outbound".
   */
  acceptRecipients?: boolean;
  /** The plugin's name (default "memory-store"). */
  name?: string;
}

/** A storage plugin for tests, and the messages it kept. */
export interface MemoryStore {
  plugin: PluginDefinition;
  /** The messages stored so far, in order. A message that the engine rejected after storing is removed again. */
  messages: StoredMessage[];
}

/**
 * Creates a storage plugin that keeps each message in memory, so that a
 * test of a filter plugin can take a message through DATA to the 250, as
 * the engine does only when some plugin stores it. List it after the
 * plugin under test.
 */
export function memoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  const route = options.route ?? "memory";
  const acceptRecipients = options.acceptRecipients ?? true;
  const messages: StoredMessage[] = [];
  const plugin = definePlugin({
    name: options.name ?? "memory-store",
    setup({ registerRoute }) {
      registerRoute(route);
      return {
        ...(acceptRecipients ? { rcpt: () => ok({ route }) } : {}),
        async queue({ message, transaction, recipients, route: stored, accepted }) {
          const chunks: Buffer[] = [];
          for await (const chunk of message.storedCopy()) chunks.push(chunk as Buffer);
          const entry: StoredMessage = {
            id: transaction.id,
            sender: transaction.sender?.address ?? "",
            route: stored,
            recipients: recipients.map((recipient) => recipient.address.address),
            content: Buffer.concat(chunks),
          };
          messages.push(entry);
          // The engine rejected the message after this call, and the client sends it again.
          // The test may have taken the copy out of messages already.
          void accepted.then((yes) => {
            if (yes) return;
            const index = messages.indexOf(entry);
            if (index !== -1) messages.splice(index, 1);
          });
          return ok();
        },
      };
    },
  });
  return { plugin, messages };
}
