// Answers the reverse lookup of the client without DNS, like Mailroom's
// default (reverse DNS off), so the benchmark sends no query anywhere.
exports.hook_lookup_rdns = function (next) {
  next(OK, "localhost");
};
