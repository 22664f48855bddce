import { loadSecretsConfig } from './config';
import { SecretsUnavailableError } from './errors';
import { logger } from './observability';
import { createSecretsManagerClient } from './secrets-manager-client';

/**
 * Secret values, read from Secrets Manager with a per-container cache, through the functions' own
 * GetSecretValue client (secrets-manager-client.ts says why it is not the SDK's).
 */

const { cacheTtlMs } = loadSecretsConfig();

/** One client per container, reused across invocations (its connections, its clock correction). */
const client = createSecretsManagerClient();

interface CachedSecret {
  readonly value: string;
  readonly fetchedAt: number;
}

const cache = new Map<string, CachedSecret>();
const inFlight = new Map<string, Promise<string>>();

/**
 * Reads a secret's string value, reusing it for `SECRET_CACHE_TTL_MS`. Concurrent callers share
 * one request. With `forceRefresh`, the cached value is ignored (used after the upstream rejected
 * a key, so a rotated key is picked up at once).
 */
export async function getSecretString(
  secretId: string,
  options: { forceRefresh?: boolean } = {},
): Promise<string> {
  const cached = cache.get(secretId);
  if (cached && !options.forceRefresh && Date.now() - cached.fetchedAt < cacheTtlMs) return cached.value;

  const pending = inFlight.get(secretId);
  if (pending) return pending;

  const request = fetchSecret(secretId).finally(() => inFlight.delete(secretId));
  inFlight.set(secretId, request);
  return request;
}

async function fetchSecret(secretId: string): Promise<string> {
  let value: unknown;
  try {
    value = await client.getSecretValue(secretId);
  } catch (error) {
    // The cause names the failure (e.g. "ResourceNotFoundException (HTTP 400)", a bad setting's
    // variable), never a value: a bad setting answers the same 503 as an outage.
    logger.warn('Secrets Manager read failed', { error: error instanceof Error ? error.message : 'unknown' });
    throw new SecretsUnavailableError(undefined, { cause: error });
  }
  if (typeof value !== 'string' || value === '') {
    throw new SecretsUnavailableError('A required secret has no string value');
  }
  cache.set(secretId, { value, fetchedAt: Date.now() });
  return value;
}
