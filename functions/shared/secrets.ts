import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { loadSecretsConfig } from './config';
import { SecretsUnavailableError } from './errors';

const { cacheTtlMs } = loadSecretsConfig();

/**
 * One client per container. Short timeouts and few attempts: a Secrets Manager outage must turn
 * into a fast 503, not a request that hangs until the Lambda timeout.
 */
const client = new SecretsManagerClient({
  maxAttempts: 2,
  requestHandler: { connectionTimeout: 1000, requestTimeout: 2000 },
});

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
  let value: string | undefined;
  try {
    const output = await client.send(new GetSecretValueCommand({ SecretId: secretId }));
    value = output.SecretString;
  } catch (error) {
    throw new SecretsUnavailableError(undefined, { cause: error });
  }
  if (value === undefined || value === '') {
    throw new SecretsUnavailableError('A required secret has no string value');
  }
  cache.set(secretId, { value, fetchedAt: Date.now() });
  return value;
}
