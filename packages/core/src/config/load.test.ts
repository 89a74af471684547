import { describe, expect, test } from "vitest";
import { ConfigError, parseConfig } from "./load.js";
import { parseNameServer } from "../services/dns.js";
import { duration, MAX_TIMER_MS, parseDuration, parseSize, size } from "./units.js";

describe("parseConfig", () => {
  test("defaults fill an empty file", () => {
    const { config } = parseConfig("", "/etc/mailroom.yaml", "/etc");
    expect(config.server.listen).toEqual([{ address: "127.0.0.1:2525", implicitTls: false, requireAuth: false }]);
    expect(config.server.limits.maxRecipients).toBe(100);
    expect(config.server.hookTimeout).toBe(30_000);
    expect(config.plugins).toEqual([]);
  });

  test("sizes and durations accept units", () => {
    const { config } = parseConfig("server:\n  limits: { maxMessageSize: 2MB, idleTimeout: 5m }\n  hookTimeout: 30s\n");
    expect(config.server.limits.maxMessageSize).toBe(2 * 1024 * 1024);
    expect(config.server.limits.idleTimeout).toBe(300_000);
  });

  test("error names file, line and option path", () => {
    const text = "server:\n  hostname: mx.test\n  limits:\n    maxRecipients: lots\n";
    expect(() => parseConfig(text, "/etc/mailroom.yaml")).toThrow(ConfigError);
    expect(() => parseConfig(text, "/etc/mailroom.yaml")).toThrow(/^\/etc\/mailroom\.yaml:4: server\.limits\.maxRecipients: /);
  });

  test("unknown option is an error", () => {
    expect(() => parseConfig("server:\n  hostnam: x\n", "f.yaml")).toThrow(/f\.yaml:2: server: Unrecognized key.*hostnam/);
  });

  test("invalid listen address is an error", () => {
    expect(() => parseConfig('server:\n  listen: ["localhost"]\n', "f.yaml")).toThrow(/server\.listen\[0\]\.address: expected host:port/);
  });

  test.each([
    ["server:\n  hookTimeout: 0\n", /server\.hookTimeout: expected a duration above 0/],
    ["server:\n  limits: { idleTimeout: 0 }\n", /server\.limits\.idleTimeout: expected a duration above 0, received 0/],
    ["server:\n  limits: { dataTimeout: 0 }\n", /server\.limits\.dataTimeout: expected a duration above 0/],
    ["server:\n  dns: { timeout: 0 }\n", /server\.dns\.timeout: expected a duration above 0/],
    ["server:\n  limits: { maxMessageSize: 1e30 }\n", /server\.limits\.maxMessageSize: expected a size of at most 9007199254740991 octets, received 1e\+30/],
    ["server:\n  limits: { maxMessageSize: 99999999999GB }\n", /server\.limits\.maxMessageSize: expected a size of at most 9007199254740991 octets/],
    ["server:\n  limits: { maxDataLineLength: 0 }\n", /server\.limits\.maxDataLineLength: expected a size of at least 1 octet, received 0/],
    ["server:\n  limits: { maxMessageSize: 0 }\n", /server\.limits\.maxMessageSize: expected a size above 0/],
    ['server:\n  proxyProtocol: ["notanip"]\n', /server\.proxyProtocol\[0\]: expected an IP address/],
    ['server:\n  hostname: "mx example"\n', /server\.hostname: expected a host name/],
  ])("value that would break the server: %j", (text, message) => {
    expect(() => parseConfig(text, "f.yaml")).toThrow(message);
  });

  test.each([
    ["hookTimeout: 30d", "hookTimeout"],
    ["shutdownTimeout: 25d", "shutdownTimeout"],
    ["limits: { idleTimeout: 30d }", "limits.idleTimeout"],
    ["limits: { dataTimeout: 2147483648 }", "limits.dataTimeout"],
    ["dns: { timeout: 30d }", "dns.timeout"],
    ["reverseDns: { enabled: true, timeout: 30d }", "reverseDns.timeout"],
  ])("duration past the timer limit is an error: %s", (option, optionPath) => {
    const message = `f.yaml:2: server.${optionPath}: expected a duration of at most 24.8 days (2147483647 ms), the longest delay a Node.js timer can wait`;
    expect(() => parseConfig(`server:\n  ${option}\n`, "f.yaml")).toThrow(message);
  });

  test("duration just below the timer limit is accepted", () => {
    const { config } = parseConfig("server:\n  hookTimeout: 24d\n  limits: { idleTimeout: 2147483647 }\n", "f.yaml");
    expect(config.server.hookTimeout).toBe(24 * 86_400_000);
    expect(config.server.limits.idleTimeout).toBe(2 ** 31 - 1);
  });

  test("shutdownTimeout may be 0", () => {
    expect(parseConfig("server:\n  shutdownTimeout: 0\n", "f.yaml").config.server.shutdownTimeout).toBe(0);
  });

  test.each([
    ["192.0.2.53", { host: "192.0.2.53", port: 53 }],
    ["192.0.2.53:5353", { host: "192.0.2.53", port: 5353 }],
    ["[2001:db8::53]:53", { host: "2001:db8::53", port: 53 }],
    ["[2001:db8::53]", { host: "2001:db8::53", port: 53 }],
    ["2001:db8::53", { host: "2001:db8::53", port: 53 }],
  ])("name server %s is accepted", (entry, parsed) => {
    const { config } = parseConfig(`server:\n  dns: { nameservers: ["${entry}"] }\n`, "f.yaml");
    expect(config.server.dns.nameservers).toEqual([entry]);
    expect(parseNameServer(entry)).toEqual(parsed);
  });

  test.each(["bogus", "ns1.example.test:53", "192.0.2.53:0", "192.0.2.53:70000", "192.0.2:53", "[192.0.2.53]:53", "2001:db8::53:53:53:53:53:53", ""])(
    "name server %j is an error",
    (entry) => {
      expect(() => parseConfig(`server:\n  dns: { nameservers: ["${entry}"] }\n`, "f.yaml")).toThrow(
        /f\.yaml:2: server\.dns\.nameservers\[0\]: expected an IP address with an optional port \(default 53\)/,
      );
      expect(() => parseNameServer(entry)).toThrow(/invalid name server/);
    },
  );

  test("banner of printable ASCII is accepted", () => {
    const { config } = parseConfig('server:\n  banner: "Mailroom ready, no UCE"\n', "f.yaml");
    expect(config.server.banner).toBe("Mailroom ready, no UCE");
  });

  test.each([
    ['"nö spam"', /server\.banner: expected printable US-ASCII text/],
    ['"line\\r\\n250 injected"', /server\.banner: expected printable US-ASCII text/],
    ['" padded"', /server\.banner: expected printable US-ASCII text/],
    ['""', /server\.banner: expected printable US-ASCII text/],
  ])("banner %s is an error", (banner, message) => {
    expect(() => parseConfig(`server:\n  banner: ${banner}\n`, "f.yaml")).toThrow(message);
  });

  test("banner that makes the greeting too long is an error", () => {
    expect(() => parseConfig(`server:\n  banner: ${"x".repeat(600)}\n`, "f.yaml")).toThrow(
      'f.yaml:2: server.banner: the greeting "220 <hostname> ESMTP <banner>" would be 620 octets; RFC 5321 allows 510',
    );
  });

  test("implicitTls without server.tls is an error", () => {
    const text = 'server:\n  listen:\n    - 127.0.0.1:25\n    - { address: "127.0.0.1:465", implicitTls: true }\n';
    expect(() => parseConfig(text, "f.yaml")).toThrow(
      /^f\.yaml:4: server\.listen\[1\]\.implicitTls: listen 127\.0\.0\.1:465 has implicitTls but server\.tls is not configured/,
    );
    const withTls = `${text}  tls: { key: k.pem, cert: c.pem }\n`;
    expect(parseConfig(withTls, "f.yaml").config.server.listen[1]?.implicitTls).toBe(true);
  });

  test.each([
    ['["127.0.0.1:25", "127.0.0.1:25"]', "server.listen[1].address: 127.0.0.1:25 is already listed as listen[0]"],
    ['["[::1]:25", "[0:0::1]:25"]', "server.listen[1].address: [0:0::1]:25 is already listed as listen[0]"],
    ['["mx.example:25", "127.0.0.1:26", "MX.Example:25"]', "server.listen[2].address: MX.Example:25 is already listed as listen[0]"],
    ['["127.0.0.1:25", { address: "127.0.0.1:25", requireAuth: true }]', "server.listen[1].address: 127.0.0.1:25 is already listed"],
  ])("duplicate listen address %s is an error", (listen, message) => {
    expect(() => parseConfig(`server:\n  listen: ${listen}\n`, "f.yaml")).toThrow(message);
  });

  test("port 0 may be listed twice", () => {
    const { config } = parseConfig('server:\n  listen: ["127.0.0.1:0", "127.0.0.1:0"]\n', "f.yaml");
    expect(config.server.listen).toHaveLength(2);
  });

  test("broken YAML names the line", () => {
    expect(() => parseConfig("server:\n  hostname: [\n", "f.yaml")).toThrow(/^f\.yaml:\d+:\d+: invalid YAML/);
  });

  test.each([
    ["server:\n\thostname: x\n", 'f.yaml:2:1: invalid YAML: Tabs are not allowed as indentation. Line 2 is "\\thostname: x"'],
    ["a: b: c\n", 'f.yaml:1:4: invalid YAML: Nested mappings are not allowed in compact mappings. Line 1 is "a: b: c"'],
    ["server:\n  hostname: x\nserver: {}\n", 'f.yaml:3:1: invalid YAML: Map keys must be unique. Line 3 is "server: {}"'],
    ['server:\n  listen: ["127.0.0.1:25"\n', "f.yaml:3:1: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ] (at the end of the file)"],
  ])("YAML error in %j gives position and reason", (text, message) => {
    let thrown: unknown;
    try {
      parseConfig(text, "f.yaml");
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as Error).message).toBe(message);
  });

  test("relative TLS paths resolve against the config folder", () => {
    const { config } = parseConfig("server:\n  tls: { key: ./k.pem, cert: c.pem }\n", "/srv/m.yaml", "/srv");
    expect(config.server.tls?.key).toBe("/srv/k.pem");
    expect(config.server.tls?.cert).toBe("/srv/c.pem");
  });
});

describe("units", () => {
  test.each([
    ["25MB", 25 * 1024 * 1024],
    ["512KB", 512 * 1024],
    ["100", 100],
    [2000, 2000],
    ["1.5KB", 1536],
  ])("size %s", (input, bytes) => expect(parseSize(input)).toBe(bytes));

  test.each([["30s", 30_000], ["5m", 300_000], ["5d", 432_000_000], ["250ms", 250], [10, 10]])(
    "duration %s",
    (input, ms) => expect(parseDuration(input)).toBe(ms),
  );

  test.each(["ten", "5 parsecs", "-1", ""])("invalid value %s", (input) => {
    expect(parseSize(input)).toBeUndefined();
    expect(parseDuration(input)).toBeUndefined();
  });
});

describe("size and duration schemas", () => {
  test("duration accepts its bounds and rejects values outside them", () => {
    const schema = duration({ min: 1 });
    expect(schema.parse(1)).toBe(1);
    expect(schema.parse(MAX_TIMER_MS)).toBe(MAX_TIMER_MS);
    expect(schema.safeParse(0).success).toBe(false);
    expect(schema.safeParse(MAX_TIMER_MS + 1).success).toBe(false);
    expect(schema.safeParse("25d").success).toBe(false);
  });

  test("duration with a larger max takes long values", () => {
    expect(duration({ max: 365 * 86_400_000 }).parse("30d")).toBe(30 * 86_400_000);
  });

  test("size rejects numbers that are not safe integers", () => {
    expect(size().safeParse(2 ** 53).success).toBe(false);
    expect(size().safeParse(1.5).success).toBe(false);
    expect(size().parse(Number.MAX_SAFE_INTEGER)).toBe(Number.MAX_SAFE_INTEGER);
    expect(size({ min: 1 }).safeParse(0).success).toBe(false);
  });
});
