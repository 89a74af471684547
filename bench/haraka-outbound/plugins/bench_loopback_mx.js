// Sends every destination domain to the loopback sink whose port is in
// BENCH_SINK_PORT, as Mailroom's smarthost route does.
exports.hook_get_mx = function (next) {
  next(OK, { exchange: "127.0.0.1", port: Number(process.env.BENCH_SINK_PORT), priority: 0 });
};
