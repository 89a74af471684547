/**
 * A stand-in for plugin-mx in end-to-end tests: it owns the "outbound" route
 * and delivers each message at queue time to one SMTP server on loopback,
 * so a test can see whether anything left the server.
 */
import { definePlugin, denySoft, ok, z } from "@mailroom/core";
import nodemailer from "nodemailer";

export default definePlugin({
  name: "test-forward",
  options: z.strictObject({ host: z.string().default("127.0.0.1"), port: z.number().int() }),
  setup({ options, registerRoute, logger }) {
    registerRoute("outbound");
    const transport = nodemailer.createTransport({
      host: options.host,
      port: options.port,
      secure: false,
      ignoreTLS: true,
    });
    return {
      async queue({ message, transaction, recipients }) {
        try {
          await transport.sendMail({
            envelope: {
              from: transaction.sender?.address ?? "",
              to: recipients.map((recipient) => recipient.address.address),
            },
            raw: message.storedCopy(),
          });
          return ok();
        } catch (error) {
          logger.warn({ err: error }, "forwarding failed");
          return denySoft();
        }
      },
      close: () => transport.close(),
    };
  },
});
