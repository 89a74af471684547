import { isIPv4, isIPv6, type Socket } from "node:net";

/**
 * The longest PROXY protocol version 1 header, CRLF included, that HAProxy's
 * specification (proxy-protocol.txt) lets a receiver expect.
 */
export const MAX_PROXY_HEADER_LENGTH = 107;

/** How long a peer that must send a PROXY header may take to send it. */
export const PROXY_HEADER_TIMEOUT_MS = 5000;

/** The client's address as a PROXY header states it. */
export interface ProxiedAddress {
  remoteAddress: string;
  remotePort: number;
}

/** A PROXY header that was missing, invalid or could not be used, and why. */
export interface ProxyHeaderFailure {
  reason: string;
  /** True when no complete header arrived in time (nothing, or part of one), as opposed to an invalid one. */
  timedOut?: boolean;
  /** The peer closed or reset the connection before the header was complete. */
  peerLeft?: boolean;
  /** The start of what the peer sent, for the log; absent when it sent nothing. */
  received?: string;
}

/** The first bytes of a PROXY protocol version 2 header. */
const V2_SIGNATURE = Buffer.from("\r\n\r\n\0\r\nQUIT\n", "latin1");
const PORT = /^\d{1,5}$/;

/**
 * Parses one PROXY protocol version 1 header line, without its CRLF. Only
 * TCP4 and TCP6 headers name a client, so "PROXY UNKNOWN", which a proxy
 * sends when it does not know the client, is a failure too: the session
 * would otherwise be attributed to the proxy's own address.
 */
export function parseProxyHeader(line: string): ProxiedAddress | ProxyHeaderFailure {
  const fields = line.split(" ");
  if (fields[0] !== "PROXY") return { reason: "the line does not start with PROXY" };
  const protocol = fields[1];
  if (protocol === "UNKNOWN") return { reason: "the proxy sent PROXY UNKNOWN, which names no client address" };
  if (protocol !== "TCP4" && protocol !== "TCP6") return { reason: `unknown protocol ${JSON.stringify(protocol ?? "")}; expected TCP4 or TCP6` };
  if (fields.length !== 6) return { reason: `expected 6 fields separated by single spaces, found ${fields.length}` };

  const [, , source, destination, sourcePort, destinationPort] = fields as [string, string, string, string, string, string];
  const isFamily = protocol === "TCP4" ? isIPv4 : isIPv6;
  if (!isFamily(source) || !isFamily(destination)) {
    return { reason: `the addresses are not both ${protocol === "TCP4" ? "IPv4" : "IPv6"} addresses` };
  }
  for (const port of [sourcePort, destinationPort]) {
    if (!PORT.test(port) || Number(port) > 65535) return { reason: `invalid port ${JSON.stringify(port)}` };
  }
  return { remoteAddress: source, remotePort: Number(sourcePort) };
}

/** Formats bytes a peer sent for a log line: printable ASCII kept, the rest escaped. */
function printable(bytes: Buffer): string {
  return JSON.stringify(bytes.toString("latin1")).slice(1, -1);
}

/**
 * Reads a PROXY protocol version 1 header from the start of `socket` and
 * calls `done` once: with the client's address, or with the reason the
 * header was missing or invalid. Bytes after the header are put back, so
 * that the SMTP session reads them. The whole header must arrive within
 * `timeout` ms and end in CRLF within MAX_PROXY_HEADER_LENGTH octets.
 */
export function readProxyHeader(
  socket: Socket,
  timeout: number,
  done: (result: ProxiedAddress | ProxyHeaderFailure) => void,
): void {
  let buffered = Buffer.alloc(0);
  let finished = false;

  const finish = (result: ProxiedAddress | ProxyHeaderFailure) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.off("readable", onReadable);
    socket.off("end", onEnd);
    socket.off("close", onEnd);
    socket.off("error", onError);
    done(result);
  };
  const fail = (reason: string, timedOut = false) => {
    const received = buffered.length > 0 ? printable(buffered.subarray(0, MAX_PROXY_HEADER_LENGTH)) : undefined;
    finish({ reason, ...(timedOut ? { timedOut } : {}), ...(received === undefined ? {} : { received }) });
  };

  const onReadable = () => {
    let chunk: Buffer | null;
    while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.subarray(0, V2_SIGNATURE.length).equals(V2_SIGNATURE)) {
        return fail("PROXY protocol version 2 is not supported; configure the proxy to send version 1");
      }
      const end = buffered.indexOf(0x0a);
      if (end === -1) {
        if (buffered.length >= MAX_PROXY_HEADER_LENGTH) return fail(`no line end within ${MAX_PROXY_HEADER_LENGTH} octets`);
        continue;
      }
      if (end + 1 > MAX_PROXY_HEADER_LENGTH) return fail(`the header line is longer than ${MAX_PROXY_HEADER_LENGTH} octets`);
      if (end === 0 || buffered[end - 1] !== 0x0d) return fail("the header line does not end in CRLF");
      const line = buffered.subarray(0, end - 1).toString("latin1");
      const rest = buffered.subarray(end + 1);
      const result = parseProxyHeader(line);
      if ("reason" in result) return fail(result.reason);
      if (rest.length > 0) socket.unshift(rest);
      return finish(result);
    }
  };
  const onEnd = () => finish({ reason: "the peer closed the connection before a complete PROXY header", peerLeft: true });
  const onError = (error: Error) => finish({ reason: `socket error before a complete PROXY header: ${error.message}`, peerLeft: true });
  const timer = setTimeout(() => {
    const reason = buffered.length > 0 ? `the header was incomplete after ${timeout} ms` : `no PROXY header within ${timeout} ms`;
    fail(reason, true);
  }, timeout);

  socket.on("readable", onReadable);
  socket.on("end", onEnd);
  socket.on("close", onEnd);
  socket.on("error", onError);
  onReadable();
}
