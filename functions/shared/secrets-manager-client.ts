import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { type CredentialProvider, createCredentialProvider, type Env, setting } from './aws-credentials';
import { type HttpResponse, sendRequest } from './aws-http';
import { signRequest } from './aws-sigv4';
import { logger } from './observability';

/**
 * GetSecretValue, the one Secrets Manager call the functions make, as a signed HTTPS POST made with
 * node built-ins: loading the SDK client it replaces took about 40 ms of every cold start (the
 * cold-import figures of `npm run bench`). secrets.ts holds the module-scope client and the cache.
 */

const THROTTLING_ERRORS = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'RequestLimitExceeded',
]);
/** The refusals the SDK reads as a wrong clock, when the answer's `Date` is far from local time. */
const CLOCK_SKEW_ERRORS = new Set([
  'AuthFailure',
  'InvalidSignatureException',
  'RequestExpired',
  'RequestInTheFuture',
  'RequestTimeTooSkewed',
  'SignatureDoesNotMatch',
]);
/** As in the SDK: a smaller difference is not why a request was refused. */
const CLOCK_SKEW_THRESHOLD_MS = 5 * 60_000;

export interface SecretsManagerClientOptions {
  /** Where the AWS settings are read (region, endpoint, credentials). @default process.env */
  readonly env?: Env;
  /** @default createCredentialProvider(env) */
  readonly credentials?: CredentialProvider;
  /** Longest wait for a new connection (TCP and TLS). @default 1000 */
  readonly connectTimeoutMs?: number;
  /** Longest wait for a whole answer, connection included. @default 2000 */
  readonly requestTimeoutMs?: number;
}

export interface SecretsManagerClient {
  /**
   * The `SecretString` of the secret (undefined for a binary secret). Rejects with
   * `SecretsManagerError` for an error answer, `SecretsManagerEndpointError` or `CredentialsError`
   * for a bad setting, and a network error or `HttpTimeoutError` otherwise.
   */
  getSecretValue(secretId: string): Promise<unknown>;
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
    /** The answer's `Date` header, in ms since the epoch: Secrets Manager's clock. */
    readonly serverTime?: number,
  ) {
    super(`GetSecretValue failed: ${type} (HTTP ${status}${requestId ? `, request id ${requestId}` : ''})`);
  }
}

/** The AWS settings give no endpoint, or one that does not exist. The message names the variables. */
export class SecretsManagerEndpointError extends Error {
  override readonly name = 'SecretsManagerEndpointError';
}

/**
 * A client with short timeouts and two attempts, so a Secrets Manager outage turns into a fast
 * failure, not a request that hangs until the Lambda timeout. A request refused for a wrong clock
 * is signed again, once, with Secrets Manager's time, and that correction is kept for the client's
 * later requests (the container's, for the module-scope client).
 */
export function createSecretsManagerClient(options: SecretsManagerClientOptions = {}): SecretsManagerClient {
  const env = options.env ?? process.env;
  const credentials = options.credentials ?? createCredentialProvider(env);
  const connectTimeoutMs = options.connectTimeoutMs ?? 1000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 2000;
  const maxAttempts = 2;
  /** One connection pool per client, reused across invocations. */
  const agents = {
    'https:': new HttpsAgent({ keepAlive: true }),
    'http:': new HttpAgent({ keepAlive: true }),
  } as const;
  /** Secrets Manager's clock minus ours, once a refusal showed they differ. */
  let clockOffsetMs = 0;

  /** Takes the server's clock from a refusal for a wrong clock; true when the request should be signed again. */
  const correctClock = (error: SecretsManagerError): boolean => {
    if (!CLOCK_SKEW_ERRORS.has(error.type) || error.serverTime === undefined) return false;
    const skewMs = error.serverTime - (Date.now() + clockOffsetMs);
    if (Math.abs(skewMs) < CLOCK_SKEW_THRESHOLD_MS) return false;
    clockOffsetMs = error.serverTime - Date.now();
    logger.warn('Secrets Manager clock skew: signing with its time', {
      errorType: error.type,
      skewMs,
      clockOffsetMs,
    });
    return true;
  };

  return {
    async getSecretValue(secretId) {
      const endpoint = secretsManagerEndpoint(secretId, env);
      const signingCredentials = await credentials();
      const body = JSON.stringify({ SecretId: secretId });
      let attempt = 1;
      let resigned = false;
      for (;;) {
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
            new Date(Date.now() + clockOffsetMs),
          );
          const response = await sendRequest(endpoint.url, {
            method: 'POST',
            headers,
            body,
            agent: agents[endpoint.url.protocol as keyof typeof agents],
            connectTimeoutMs,
            timeoutMs: requestTimeoutMs,
          });
          return secretStringOf(response);
        } catch (error) {
          // One more signing for a wrong clock, on top of the attempts: it is not an outage.
          if (!resigned && error instanceof SecretsManagerError && correctClock(error)) {
            resigned = true;
            continue;
          }
          // Network errors and timeouts are worth another attempt; an answer only when it says so.
          const retryable = !(error instanceof SecretsManagerError) || error.retryable;
          if (attempt >= maxAttempts || !retryable) throw error;
          attempt++;
          await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 150));
        }
      }
    },
  };
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
  throw new SecretsManagerError(
    type,
    response.status,
    retryable,
    requestIdOf(response),
    serverTimeOf(response),
  );
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

function serverTimeOf(response: HttpResponse): number | undefined {
  const time = Date.parse(response.headers.date ?? '');
  return Number.isNaN(time) ? undefined : time;
}

export interface ServiceEndpoint {
  readonly url: URL;
  /** The region the request is signed for. */
  readonly region: string;
}

/** Regions whose partition has another domain than the ones below (iso, iso-b, iso-e, iso-f, EUSC). */
const UNSUPPORTED_PARTITION = /^(?:[a-z]{2}-iso[a-z]?-|eusc-)/;

/**
 * Where GetSecretValue for `secretId` goes. The region: the secret's ARN's, else `AWS_REGION`, else
 * `AWS_DEFAULT_REGION`. The URL: `AWS_ENDPOINT_URL_SECRETS_MANAGER`, else `AWS_ENDPOINT_URL` (moto,
 * LocalStack), unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`; else the regional endpoint of the
 * commercial, GovCloud or China partition, its FIPS variant with `AWS_USE_FIPS_ENDPOINT=true`.
 * `AWS_USE_DUALSTACK_ENDPOINT=true` changes nothing: those endpoints are dual-stack already (the
 * SDK's endpoint rules give the same hosts). A combination with no endpoint (FIPS in China, the
 * isolated and sovereign partitions) fails with `SecretsManagerEndpointError`, naming what to set.
 * These are not in config.ts: they are the runtime's, not this service's settings, and they are
 * needed only when a secret is first read.
 */
export function secretsManagerEndpoint(secretId: string, env: Env = process.env): ServiceEndpoint {
  const fromArn = /^arn:[\w-]+:secretsmanager:([a-z0-9-]+):/.exec(secretId)?.[1];
  const regionVariable = setting(env, 'AWS_REGION') === undefined ? 'AWS_DEFAULT_REGION' : 'AWS_REGION';
  const region = fromArn ?? setting(env, regionVariable);
  const regionSource = fromArn === undefined ? regionVariable : "the secret's ARN";
  if (region === undefined) {
    throw new SecretsManagerEndpointError(
      'No AWS region for Secrets Manager: set AWS_REGION, or pass the secret as an ARN',
    );
  }
  const configured = flag(env, 'AWS_IGNORE_CONFIGURED_ENDPOINT_URLS')
    ? undefined
    : (setting(env, 'AWS_ENDPOINT_URL_SECRETS_MANAGER') ?? setting(env, 'AWS_ENDPOINT_URL'));
  if (configured !== undefined) {
    const url = URL.canParse(configured) ? new URL(configured) : undefined;
    if (url === undefined || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      throw new SecretsManagerEndpointError(
        'AWS_ENDPOINT_URL_SECRETS_MANAGER or AWS_ENDPOINT_URL is not an http(s) URL',
      );
    }
    return { url, region };
  }

  if (UNSUPPORTED_PARTITION.test(region)) {
    throw new SecretsManagerEndpointError(
      `No built-in Secrets Manager endpoint for region ${region} (from ${regionSource}): set AWS_ENDPOINT_URL_SECRETS_MANAGER`,
    );
  }
  const fips = flag(env, 'AWS_USE_FIPS_ENDPOINT');
  // Checked for a bad value, but it changes no host: these regional endpoints are dual-stack already.
  flag(env, 'AWS_USE_DUALSTACK_ENDPOINT');
  const china = region.startsWith('cn-');
  if (fips && china) {
    throw new SecretsManagerEndpointError(
      `Secrets Manager has no FIPS endpoint in ${region} (from ${regionSource}): unset AWS_USE_FIPS_ENDPOINT, or set AWS_ENDPOINT_URL_SECRETS_MANAGER`,
    );
  }
  const service = fips ? 'secretsmanager-fips' : 'secretsmanager';
  const domain = china ? 'amazonaws.com.cn' : 'amazonaws.com';
  return { url: new URL(`https://${service}.${region}.${domain}/`), region };
}

/** A `true`/`false` setting, unset meaning false; any other value is refused, as the SDK refuses it. */
function flag(env: Env, name: string): boolean {
  const value = setting(env, name);
  if (value === undefined || value === 'false') return false;
  if (value === 'true') return true;
  throw new SecretsManagerEndpointError(`${name} must be true or false`);
}
