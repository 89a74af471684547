export { default, OUTBOUND_ROUTE } from "./plugin.js";
export { optionsSchema, DEFAULT_RETRY, MIN_RETRY_DELAY, retryDelay, type MxOptions, type Target } from "./options.js";
export { QueueStore, type QueueRecord, type FailedRecipient } from "./store.js";
export { DiskOutboundQueue, type QueueEntry } from "./queue.js";
export { buildBounce, type BounceInput } from "./bounce.js";
export { route, orderByPreference, isLocalAddress, describeLocalHost, type Hop, type Route } from "./routing.js";
export { openQueue, queueFolders, localRouteHosts, queueList, queueShow, queueRetry, queueDelete } from "./cli.js";
