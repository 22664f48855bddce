import { Cluster, Redis, type RedisOptions, ReplyError } from 'ioredis';
import { loadRedisConfig } from './config';
import { ChatProxyError, StorageUnavailableError } from './errors';
import { scriptKeyCounts, scripts } from './redis-scripts';
import { getSecretString } from './secrets';

export const redisConfig = loadRedisConfig();

/** Redis refused our credentials (a rotated password): the URL secret is worth reading again. */
const AUTH_ERROR = /^(WRONGPASS|NOAUTH)\b/;

/** A single node or a cluster: the repository works the same on both. */
export type RedisClient = Redis | Cluster;

let connecting: Promise<RedisClient> | undefined;
/** Set when Redis refused our credentials: the next client reads the URL secret afresh. */
let refreshSecret = false;

/** The client once created (what `connecting` resolved to), until it is dropped. */
let ready: RedisClient | undefined;

/**
 * The container's one Redis connection, created on first use (the URL may have to be read from
 * Secrets Manager first) and reused by every later invocation. Never quit per invocation.
 */
export function getRedis(): Promise<RedisClient> {
  if (connecting === undefined) {
    const attempt: Promise<RedisClient> = createClient().then(
      (client) => {
        if (connecting === attempt) ready = client;
        return client;
      },
      (error: unknown) => {
        if (connecting === attempt) connecting = undefined;
        throw error;
      },
    );
    connecting = attempt;
  }
  return connecting;
}

async function createClient(): Promise<RedisClient> {
  const forceRefresh = refreshSecret;
  refreshSecret = false;
  const url =
    'value' in redisConfig.url
      ? redisConfig.url.value
      : await getSecretString(redisConfig.url.secretArn, { forceRefresh });
  if (!/^rediss?:\/\//.test(url)) {
    throw new StorageUnavailableError(
      'Chat storage is not configured: the Redis URL secret holds no redis:// URL',
    );
  }
  const options = {
    connectTimeout: redisConfig.connectTimeoutMs,
    commandTimeout: redisConfig.commandTimeoutMs,
    // A command waits for at most one reconnect attempt, so an outage answers 503 in about
    // connectTimeout instead of queueing until the Lambda times out.
    maxRetriesPerRequest: 1,
  };
  const retry = (attempt: number) => Math.min(attempt * 100, 1000);
  const client = redisConfig.cluster
    ? clusterClient(url, options, retry)
    : new Redis(url, { ...options, retryStrategy: retry });
  // The repository's scripts, as commands ioredis calls by SHA (EVALSHA).
  for (const [name, lua] of Object.entries(scripts)) {
    client.defineCommand(name, { numberOfKeys: scriptKeyCounts[name as keyof typeof scripts], lua });
  }
  // Without a listener ioredis prints every reconnect failure as "Unhandled error event"; the
  // failing command already answers 503, so one structured line per outage is enough.
  let reported = false;
  client.on('error', (error: Error) => {
    if (reported) return;
    reported = true;
    console.error(
      JSON.stringify({ level: 'ERROR', message: 'Redis connection error', error: error.message }),
    );
  });
  client.on('ready', () => {
    reported = false;
  });
  if (client instanceof Cluster) await clusterReady(client);
  return client;
}

/**
 * Waits until a cluster client knows the cluster's layout, at most a connect and a command
 * timeout. The cluster client keeps no offline queue (see `clusterClient`), so it must be ready
 * before the first command; a cluster unreachable now answers 503 and the next request tries
 * afresh. A cluster that refused our credentials has the secret read again next time.
 */
async function clusterReady(client: Cluster): Promise<void> {
  try {
    await untilReady(client, redisConfig.connectTimeoutMs + redisConfig.commandTimeoutMs);
  } catch (error) {
    client.disconnect();
    if (AUTH_ERROR.test(String((error as Error).message))) throw credentialsRefused(error);
    throw new StorageUnavailableError(undefined, { cause: error });
  }
}

/**
 * Redis refused our credentials (the password was rotated, or the secret holds a wrong one): the
 * next client reads the secret again instead of failing until the container recycles.
 */
function credentialsRefused(cause: unknown): StorageUnavailableError {
  refreshSecret = true;
  return new StorageUnavailableError('Chat storage refused our credentials, try again shortly', { cause });
}

/** The wait under way for each cluster client, shared by the requests that find it not ready. */
const readiness = new WeakMap<Cluster, Promise<void>>();

/**
 * Resolves once the cluster client is ready (at once if it is) and its primaries are connected:
 * the client opens a shard's connection only on first use and, with no offline queue, would bounce
 * the first commands for it (about 100 ms each). Rejects after `timeoutMs` with an outage error,
 * or as soon as a node refuses our credentials, with that Redis error.
 */
function untilReady(client: Cluster, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  const waiting = readiness.get(client);
  if (waiting) return waiting;
  const wait = waitForReady(client, timeoutMs).finally(() => readiness.delete(client));
  readiness.set(client, wait);
  return wait;
}

async function waitForReady(client: Cluster, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let remember: (error: unknown) => void = () => undefined;
  let ready: () => void = () => undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            // Not the node's own error: a Redis reply error (NOPERM, say) would pass for a bug.
            new Error('The Redis Cluster did not become ready in time', { cause: lastError }),
          ),
        timeoutMs,
      );
      remember = (error: unknown) => {
        lastError = error;
        // Refused credentials will not get better by waiting.
        if (AUTH_ERROR.test(String((error as Error).message))) {
          clearTimeout(timer);
          reject(error);
        }
      };
      ready = () => {
        clearTimeout(timer);
        resolve();
      };
      client.on('node error', remember);
      client.once('ready', ready);
    });
  } finally {
    client.off('node error', remember);
    client.off('ready', ready);
  }
  const primaries = client.nodes('master').filter((node) => node.status === 'wait');
  await Promise.race([
    Promise.all(primaries.map((node) => node.connect().catch(() => undefined))),
    new Promise((resolve) => setTimeout(resolve, Math.max(deadline - Date.now(), 0)).unref()),
  ]);
}

/**
 * A cluster client from the URL of any one node. Managed clusters (MemoryDB, ElastiCache) answer
 * with node addresses whose TLS certificates name the hosts, so names are not resolved to IPs.
 */
function clusterClient(url: string, options: RedisOptions, retry: (attempt: number) => number): Cluster {
  const parsed = new URL(url);
  const tls = parsed.protocol === 'rediss:';
  return new Cluster([{ host: parsed.hostname, port: Number(parsed.port || 6379) }], {
    clusterRetryStrategy: retry,
    // While the cluster is unreachable a command fails at once (503) instead of waiting in a
    // queue until the Lambda times out; `clusterReady` waits for the layout before the first.
    enableOfflineQueue: false,
    dnsLookup: (address, callback) => callback(null, address),
    slotsRefreshTimeout: redisConfig.connectTimeoutMs,
    redisOptions: {
      ...options,
      ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
      ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
      ...(tls ? { tls: {} } : {}),
    },
  });
}

/**
 * Runs a Redis operation, turning connection failures and timeouts into a 503. Redis replying
 * with an error (a bug, not an outage) is left as it is.
 */
export async function withRedis<T>(operation: (redis: RedisClient) => Promise<T>): Promise<T> {
  // Once connected, the operation starts in this very call, so its commands are written before
  // the caller goes on (a turn counts the new message's tokens while Redis answers).
  let redis = ready;
  if (redis === undefined) {
    try {
      redis = await getRedis();
    } catch (error) {
      if (error instanceof ChatProxyError) throw error;
      throw new StorageUnavailableError(undefined, { cause: error });
    }
  }
  try {
    // A cluster client reconnecting (its connections dropped: an idle timeout while the Lambda
    // was frozen, a failover) queues nothing: wait for it a connect timeout, then fail fast.
    if (redis instanceof Cluster && redis.status !== 'ready') {
      await untilReady(redis, redisConfig.connectTimeoutMs);
    }
    return await operation(redis);
  } catch (error) {
    if (error instanceof ReplyError && !AUTH_ERROR.test(String((error as Error).message))) throw error;
    if (error instanceof ReplyError) {
      // Drop this connection too, so the next request makes one with the secret read again.
      if (connecting !== undefined && (await connecting.catch(() => undefined)) === redis) {
        connecting = undefined;
        ready = undefined;
      }
      redis.disconnect();
      throw credentialsRefused(error);
    }
    throw new StorageUnavailableError(undefined, { cause: error });
  }
}

/** Every key matching `pattern`, on every primary node of a cluster or on the one node. */
export async function scanAll(redis: RedisClient, pattern: string): Promise<string[]> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  const found: string[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
  }
  return found;
}
