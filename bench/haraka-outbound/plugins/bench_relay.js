// Marks every client as allowed to relay and accepts every recipient, the
// same work as Mailroom's plugin-relay with 127.0.0.1 trusted.
exports.hook_connect = function (next, connection) {
  connection.relaying = true;
  next();
};
exports.hook_rcpt = function (next) {
  next(OK);
};
