export { SmtpTestClient, type SmtpReply } from "./client.js";
export { startTestServer, type TestServer, type TestServerOptions } from "./server.js";
