// tsyringe needs the Reflect metadata API before it loads.
import "reflect-metadata";

export { z } from "zod";
export { container, type DependencyContainer } from "tsyringe";
export type { Logger } from "pino";

export * from "./answers.js";
export * from "./hooks.js";
export * from "./plugins/plugin.js";
export { HookRunner, type LoadedPlugin, type HookOutcome } from "./plugins/runner.js";
export { checkRouteOwners, loadPlugins, setupPlugin, startPlugins, closePlugins, type PluginSetupEnvironment } from "./plugins/loader.js";
export { MessageVerdict, storeRoutes, type StoreResult } from "./store-routes.js";
export { runRcpt, type RcptContext, type RcptResult } from "./recipients.js";
export { runDataHook, storeMessage, type DataResult, type MessageContext } from "./data.js";
export { Connection, pooledRandom, Transaction, type Recipient, type TlsState } from "./session-state.js";
export { Message, wrapHeaders } from "./message/message.js";
export { decodeEncodedWords, type HeaderField, type MessageHeaders } from "./message/headers.js";
export { rfc5322Date, receivedHeader } from "./message/received.js";
export { MemoryBudget, SpoolWriter, type SpoolResult } from "./message/spool.js";
export * from "./smtp/address.js";
export { asciiDomainAddress, checkDomainName, domainName, isAsciiText, normalizeDomain } from "./smtp/domain.js";
export { replyFor, replyForOutcome, formatReply, type Reply } from "./replies.js";
export * from "./services/tokens.js";
export * from "./services/dns.js";
export * from "./config/schema.js";
export { ConfigError, loadConfig, parseConfig, formatIssues, type LoadedConfig } from "./config/load.js";
export { parseSize, parseDuration, size, duration, MAX_TIMER_MS, type RangeOptions } from "./config/units.js";
export { listenerWarnings, type ListenerWarning } from "./config/listener-warnings.js";
export { loadTlsFiles, type CertificateFiles, type TlsFiles } from "./config/tls-files.js";
export { CERTIFICATE_RENEWAL_DAYS, tlsWarnings, type TlsWarning } from "./config/tls-warnings.js";
export { createInjector, type InjectorEnvironment } from "./inject.js";
export { bootTime, OwnerCheck, processAlive, processStartTime, removeLeftovers } from "./process-alive.js";
export { MailroomServer, type ServerOptions, type BoundAddress } from "./server.js";
export { metricsTarget } from "./metrics.js";
export { describeError, errorCode, errorJsonReplacer, logSerializers } from "./logging.js";
export { readNearestPackageJson, type NearestPackageJson } from "./package-json.js";
