/**
 * The access string of the functions' MemoryDB user (`storage=provisioned`): only what the
 * repository and ioredis send, on the service's keys.
 *
 * - `~chat-proxy:*`: the keys under the functions' default `REDIS_KEY_PREFIX`, which the stack
 *   keeps; no pub/sub channels.
 * - `+@read +@write`: the data commands, less `@dangerous` ones (`KEYS`, `FLUSHALL`, `SORT`,
 *   `MIGRATE`, `RESTORE`, ...); `+eval +evalsha`: the repository's Lua scripts (no `SCRIPT` or
 *   `FUNCTION` administration).
 * - `+@connection`: `AUTH`, `HELLO`, `PING`, `READONLY` and the like, less `CLIENT KILL`/`PAUSE`;
 *   `+info` (ioredis' ready check) and `+cluster|slots +cluster|shards +cluster|info` (the cluster
 *   client's view of the topology), none of which changes the server.
 *
 * Kept free of CDK imports: test/integration/cluster.test.ts runs the handlers as this user.
 */
export const APP_USER_ACCESS_STRING =
  'on ~chat-proxy:* -@all +@read +@write +@connection -@dangerous ' +
  '+info +eval +evalsha +cluster|slots +cluster|shards +cluster|info';
