import { Redis, ReplyError } from 'ioredis';
import { loadRedisConfig } from './config';
import { ChatProxyError, StorageUnavailableError } from './errors';
import { getSecretString } from './secrets';

export const redisConfig = loadRedisConfig();

let connecting: Promise<Redis> | undefined;

/**
 * The container's one Redis connection, created on first use (the URL may have to be read from
 * Secrets Manager first) and reused by every later invocation. Never quit per invocation.
 */
export function getRedis(): Promise<Redis> {
  connecting ??= createClient().catch((error: unknown) => {
    connecting = undefined;
    throw error;
  });
  return connecting;
}

async function createClient(): Promise<Redis> {
  const url =
    'value' in redisConfig.url ? redisConfig.url.value : await getSecretString(redisConfig.url.secretArn);
  if (!/^rediss?:\/\//.test(url)) {
    throw new StorageUnavailableError(
      'Chat storage is not configured: the Redis URL secret holds no redis:// URL',
    );
  }
  const client = new Redis(url, {
    connectTimeout: redisConfig.connectTimeoutMs,
    commandTimeout: redisConfig.commandTimeoutMs,
    // A command waits for at most one reconnect attempt, so an outage answers 503 in about
    // connectTimeout instead of queueing until the Lambda times out.
    maxRetriesPerRequest: 1,
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  });
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
  return client;
}

/**
 * Runs a Redis operation, turning connection failures and timeouts into a 503. Redis replying
 * with an error (a bug, not an outage) is left as it is.
 */
export async function withRedis<T>(operation: (redis: Redis) => Promise<T>): Promise<T> {
  let redis: Redis;
  try {
    redis = await getRedis();
  } catch (error) {
    if (error instanceof ChatProxyError) throw error;
    throw new StorageUnavailableError(undefined, { cause: error });
  }
  try {
    return await operation(redis);
  } catch (error) {
    if (error instanceof ReplyError) throw error;
    throw new StorageUnavailableError(undefined, { cause: error });
  }
}
