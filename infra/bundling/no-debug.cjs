// Bundled in place of the `debug` package (esbuild --alias, infra/bundling/lean-ioredis.ts).
// ioredis logs through `debug`, which prints only when DEBUG=ioredis:* is set; loading it costs a
// cold start about 4 ms (it loads `tty` and looks for `supports-color`) in every function that talks
// to Redis. Deployed functions log through Powertools instead, so these loggers are never enabled.
'use strict';

function createDebug(namespace) {
  const debug = () => undefined;
  debug.namespace = namespace;
  debug.enabled = false;
  debug.destroy = () => false;
  debug.extend = (suffix) => createDebug(`${namespace}:${suffix}`);
  debug.log = () => undefined;
  return debug;
}
createDebug.enable = () => undefined;
createDebug.disable = () => '';
createDebug.enabled = () => false;
createDebug.default = createDebug;
createDebug.debug = createDebug;

module.exports = createDebug;
