export { default } from "./plugin.js";
export { maildirPath, ROUTE } from "./plugin.js";
export { ConfigDirectory, type DirectoryConfig } from "./directory.js";
export {
  deliverToMaildir,
  ensureMaildir,
  MaildirError,
  type DeliverOptions,
  type Delivery,
  type DeliverySource,
} from "./deliver.js";
export { escapeHostname, uniqueName, type NameParts } from "./filename.js";
export { optionsSchema, type MaildirOptions, type DomainOptions } from "./options.js";
