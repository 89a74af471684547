export { SmtpTestClient, type SmtpReply } from "./client.js";
export { startTestServer, type TestServer, type TestServerOptions } from "./server.js";
export {
  address,
  PluginHarness,
  TestSession,
  testPlugin,
  testPlugins,
  type ConnectionInit,
  type HarnessOptions,
  type HookCall,
} from "./harness.js";
export { captureLogs, NoDnsResolver, StaticDnsResolver, TestClock, type StaticZone } from "./fakes.js";
export { memoryStore, type MemoryStore, type MemoryStoreOptions, type StoredMessage } from "./memory-store.js";
