import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createCredentialProvider } from './aws-credentials';
import { type HttpResponse, sendRequest } from './aws-http';
import { signRequest } from './aws-sigv4';
import { loadSecretsConfig } from './config';
import { SecretsUnavailableError } from './errors';
import { logger } from './observability';

/**
 * Secret values, read from Secrets Manager with a per-container cache. The one call needed,
 * GetSecretValue, is a signed HTTPS POST made here with node built-ins: loading the SDK client it
 * replaces took about 40 ms of every cold start (the cold-import figures of `npm run bench`).
 */

type Env = Readonly<Record<string, string | undefined>>;

const { cacheTtlMs } = loadSecretsConfig();

/**
 * As the SDK client was set up: short timeouts and two attempts, so a Secrets Manager outage turns
 * into a fast 503, not a request that hangs until the Lambda timeout.
 */
const MAX_ATTEMPTS = 2;
const CONNECT_TIMEOUT_MS = 1000;
const REQUEST_TIMEOUT_MS = 2000;
const THROTTLING_ERRORS = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'RequestLimitExceeded',
]);

/** One connection pool per container, reused across invocations. */
const agents = {
  'https:': new HttpsAgent({ keepAlive: true }),
  'http:': new HttpAgent({ keepAlive: true }),
} as const;
const credentials = createCredentialProvider();

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
    value = await getSecretValue(secretId);
  } catch (error) {
    // The cause names the failure (e.g. "ResourceNotFoundException (HTTP 400)"), never a value.
    logger.warn('Secrets Manager read failed', { error: error instanceof Error ? error.message : 'unknown' });
    throw new SecretsUnavailableError(undefined, { cause: error });
  }
  if (typeof value !== 'string' || value === '') {
    throw new SecretsUnavailableError('A required secret has no string value');
  }
  cache.set(secretId, { value, fetchedAt: Date.now() });
  return value;
}

/** A failed GetSecretValue: the error type and status Secrets Manager answered, for the logs. */
export class SecretsManagerError extends Error {
  override readonly name = 'SecretsManagerError';
  constructor(
    /** e.g. `ResourceNotFoundException`, without the namespace. */
    readonly type: string,
    readonly status: number,
    readonly retryable: boolean,
    requestId: string | undefined,
  ) {
    super(`GetSecretValue failed: ${type} (HTTP ${status}${requestId ? `, request id ${requestId}` : ''})`);
  }
}

/** The `SecretString` of the secret (undefined for a binary secret), with one retry on transient failures. */
async function getSecretValue(secretId: string): Promise<unknown> {
  const endpoint = secretsManagerEndpoint(secretId);
  const signingCredentials = await credentials();
  const body = JSON.stringify({ SecretId: secretId });
  for (let attempt = 1; ; attempt++) {
    try {
      const headers = signRequest(
        {
          method: 'POST',
          url: endpoint.url,
          headers: {
            'content-type': 'application/x-amz-json-1.1',
            'x-amz-target': 'secretsmanager.GetSecretValue',
          },
          body,
          region: endpoint.region,
          service: 'secretsmanager',
        },
        signingCredentials,
      );
      const response = await sendRequest(endpoint.url, {
        method: 'POST',
        headers,
        body,
        agent: agents[endpoint.url.protocol as keyof typeof agents],
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        timeoutMs: REQUEST_TIMEOUT_MS,
      });
      return secretStringOf(response);
    } catch (error) {
      // Network errors and timeouts are worth another attempt; an answer only when it says so.
      const retryable = !(error instanceof SecretsManagerError) || error.retryable;
      if (attempt >= MAX_ATTEMPTS || !retryable) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 150));
    }
  }
}

function secretStringOf(response: HttpResponse): unknown {
  let parsed: Record<string, unknown> = {};
  try {
    const value: unknown = JSON.parse(response.body);
    if (typeof value === 'object' && value !== null) parsed = value as Record<string, unknown>;
  } catch {
    // An error answer is described by its status and headers alone; a 200 must be JSON.
    if (response.status === 200) {
      throw new SecretsManagerError('InvalidResponse', 200, false, requestIdOf(response));
    }
  }
  if (response.status === 200) return parsed.SecretString;

  const type = errorTypeOf(response, parsed);
  const retryable = response.status >= 500 || response.status === 429 || THROTTLING_ERRORS.has(type);
  throw new SecretsManagerError(type, response.status, retryable, requestIdOf(response));
}

/**
 * The error's type from `x-amzn-errortype` or `__type`, both of which may carry a namespace
 * (`com.amazonaws.secretsmanager#ResourceNotFoundException`) or a URL suffix after a colon.
 * The message is left out: AccessDenied messages name the account and role.
 */
function errorTypeOf(response: HttpResponse, body: Record<string, unknown>): string {
  const header = response.headers['x-amzn-errortype'];
  const raw = [header, body.__type, body.code, body.Code].find((value) => typeof value === 'string');
  const type = (raw as string | undefined)?.split(':')[0]?.split('#').pop() ?? '';
  return /^[A-Za-z][A-Za-z0-9.]{0,99}$/.test(type) ? type : 'UnknownError';
}

function requestIdOf(response: HttpResponse): string | undefined {
  const id = response.headers['x-amzn-requestid'];
  return typeof id === 'string' ? id : undefined;
}

function setting(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

export interface ServiceEndpoint {
  readonly url: URL;
  /** The region the request is signed for. */
  readonly region: string;
}

/**
 * Where GetSecretValue for `secretId` goes, read from the SDK's standard variables as the SDK read
 * them: the region from the secret's ARN, else `AWS_REGION`, else `AWS_DEFAULT_REGION`; the URL
 * from `AWS_ENDPOINT_URL_SECRETS_MANAGER`, else `AWS_ENDPOINT_URL` (moto, LocalStack), unless
 * `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`; else the regional endpoint, its FIPS variant with
 * `AWS_USE_FIPS_ENDPOINT=true`. These are not in config.ts: they are the runtime's, not this
 * service's settings, and the region is needed only when a secret is first read.
 */
export function secretsManagerEndpoint(secretId: string, env: Env = process.env): ServiceEndpoint {
  const fromArn = /^arn:[\w-]+:secretsmanager:([a-z0-9-]+):/.exec(secretId)?.[1];
  const region = fromArn ?? setting(env, 'AWS_REGION') ?? setting(env, 'AWS_DEFAULT_REGION');
  if (region === undefined) {
    throw new Error('No AWS region for Secrets Manager: set AWS_REGION, or pass the secret as an ARN');
  }
  const configured =
    setting(env, 'AWS_IGNORE_CONFIGURED_ENDPOINT_URLS') === 'true'
      ? undefined
      : (setting(env, 'AWS_ENDPOINT_URL_SECRETS_MANAGER') ?? setting(env, 'AWS_ENDPOINT_URL'));
  if (configured !== undefined) {
    const url = URL.canParse(configured) ? new URL(configured) : undefined;
    if (url === undefined || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      throw new Error('AWS_ENDPOINT_URL_SECRETS_MANAGER or AWS_ENDPOINT_URL is not an http(s) URL');
    }
    return { url, region };
  }
  const service = setting(env, 'AWS_USE_FIPS_ENDPOINT') === 'true' ? 'secretsmanager-fips' : 'secretsmanager';
  const domain = region.startsWith('cn-') ? 'amazonaws.com.cn' : 'amazonaws.com';
  return { url: new URL(`https://${service}.${region}.${domain}/`), region };
}
