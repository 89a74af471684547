// The bare smtp-server sink: accepts every sender and recipient and throws the
// data away. It uses the smtp-server copy that @mailroom/core runs on, so it is
// the ceiling of any server built on that library.
//
// smtp-server waits 100 ms before its greeting to catch early talkers, which
// caps one-connection-per-message loads at 10 connections per second per
// client. Mailroom sends its greeting at once, so this sink does too, unless
// SINK_STOCK=1 asks for smtp-server exactly as shipped.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const [host = "127.0.0.1", port = "2525"] = (process.argv[2] ?? "").split(":");
const core = fileURLToPath(new URL("../../packages/core/package.json", import.meta.url));
const requireFromCore = createRequire(core);
const { SMTPServer } = requireFromCore("smtp-server");
if (process.env.SINK_STOCK !== "1") {
  const { SMTPConnection } = requireFromCore("smtp-server/lib/smtp-connection.js");
  SMTPConnection.prototype.init = function init() {
    this._setListeners(() => this.connectionReady());
  };
}

const server = new SMTPServer({
  name: "sink.bench.test",
  banner: "bench sink",
  logger: false,
  authOptional: true,
  disabledCommands: ["AUTH", "STARTTLS"],
  disableReverseLookup: true,
  maxClients: 1000,
  onData(stream, _session, callback) {
    stream.on("end", () => callback());
    stream.resume();
  },
});
server.on("error", (error) => console.error("sink:", error.message));
server.listen(Number(port), host, () => console.log(`listening on ${host}:${port}`));
process.once("SIGTERM", () => server.close(() => process.exit(0)));
