import { readFile } from 'node:fs/promises';
import { sendRequest } from './aws-http';
import type { AwsCredentials } from './aws-sigv4';

/**
 * The credentials the functions sign their AWS calls with, looked up in this order. This is not
 * the SDK's whole chain: it covers what Lambda, `sam local` and containers provide, and hands the
 * rest to the SDK's chain.
 *
 * 0. With `AWS_PROFILE` set, the SDK's chain at once: there the profile wins over the keys in the
 *    environment. Lambda never sets `AWS_PROFILE`; a developer's shell may.
 * 1. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`: what Lambda and
 *    `sam local` give a function, so the deployed path never leaves this module.
 * 2. The container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`),
 *    as under Lambda SnapStart, ECS or EKS Pod Identity; cached until shortly before they expire.
 * 3. Anything else (a `default` profile, SSO, web identity, EC2 instance metadata): the SDK's
 *    chain, imported only then. (The SDK would read a `default` profile before step 2; no deployed
 *    function has one.) It is not bundled; the Lambda runtime ships it, a developer's node_modules
 *    has it, and no deployed function ever reaches this step.
 */

/** The environment the AWS settings are read from (`process.env`, or a test's own). */
export type Env = Readonly<Record<string, string | undefined>>;

export type CredentialProvider = () => Promise<AwsCredentials>;

/**
 * An AWS runtime setting (`AWS_REGION`, `AWS_PROFILE`...): the variable trimmed, undefined when
 * unset or blank. These are the runtime's variables, read where they are needed, not in config.ts.
 */
export function setting(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

/** Container credentials are fetched again when they have less than this left. */
const REFRESH_BEFORE_EXPIRY_MS = 5 * 60_000;
const CONTAINER_TIMEOUT_MS = 1000;
/** The ECS task metadata address that `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is relative to. */
const ECS_CONTAINER_HOST = '169.254.170.2';
const ECS_CONTAINER_ORIGIN = `http://${ECS_CONTAINER_HOST}`;
/** Plain-HTTP endpoints the SDK accepts for `AWS_CONTAINER_CREDENTIALS_FULL_URI`: no credentials leave the host. */
const LOCAL_CONTAINER_HOSTS = new Set([
  '169.254.170.2',
  '169.254.170.23',
  '[fd00:ec2::23]',
  'localhost',
  '[::1]',
]);

/** No usable credentials: a bad credentials setting, or an endpoint that answered none. */
export class CredentialsError extends Error {
  override readonly name = 'CredentialsError';
}

/** Step 1: the key pair from the environment, when both halves are there. */
export function environmentCredentials(env: Env): AwsCredentials | undefined {
  const accessKeyId = setting(env, 'AWS_ACCESS_KEY_ID');
  const secretAccessKey = setting(env, 'AWS_SECRET_ACCESS_KEY');
  if (accessKeyId === undefined || secretAccessKey === undefined) return undefined;
  return { accessKeyId, secretAccessKey, sessionToken: setting(env, 'AWS_SESSION_TOKEN') };
}

/** Step 2's endpoint, or undefined when no container endpoint is configured. */
export function containerCredentialsUrl(env: Env): URL | undefined {
  const relative = setting(env, 'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI');
  if (relative !== undefined) {
    // Appended, as the SDK does, not resolved: `new URL('//host/x', base)` or an absolute URL
    // would take the authorization token to another host and trust whatever it answered.
    const joined = `${ECS_CONTAINER_ORIGIN}${relative}`;
    const url = URL.canParse(joined) ? new URL(joined) : undefined;
    if (url?.protocol !== 'http:' || url.hostname !== ECS_CONTAINER_HOST) {
      throw new CredentialsError(
        `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must be a path on ${ECS_CONTAINER_HOST}, starting with "/"`,
      );
    }
    return url;
  }
  const full = setting(env, 'AWS_CONTAINER_CREDENTIALS_FULL_URI');
  if (full === undefined) return undefined;
  if (!URL.canParse(full)) throw new CredentialsError('AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL');
  const url = new URL(full);
  const local = LOCAL_CONTAINER_HOSTS.has(url.hostname) || /^127\.\d+\.\d+\.\d+$/.test(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && local)) {
    throw new CredentialsError(
      'AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback or container metadata address',
    );
  }
  return url;
}

async function containerAuthorization(env: Env): Promise<string | undefined> {
  // The file wins: it is rotated in place (EKS Pod Identity), the variable is not.
  const file = setting(env, 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE');
  if (file !== undefined) return (await readFile(file, 'utf8')).trim();
  return setting(env, 'AWS_CONTAINER_AUTHORIZATION_TOKEN');
}

/** Temporary credentials, as the container endpoint must answer them. */
interface ContainerCredentials extends AwsCredentials {
  readonly sessionToken: string;
  readonly expiration: Date;
}

async function fetchContainerCredentials(url: URL, env: Env): Promise<ContainerCredentials> {
  const attempt = async (): Promise<ContainerCredentials> => {
    const authorization = await containerAuthorization(env);
    const response = await sendRequest(url, {
      method: 'GET',
      headers: authorization === undefined ? {} : { authorization },
      connectTimeoutMs: CONTAINER_TIMEOUT_MS,
      timeoutMs: CONTAINER_TIMEOUT_MS,
    });
    if (response.status !== 200) {
      throw new CredentialsError(`The container credentials endpoint answered HTTP ${response.status}`);
    }
    const { AccessKeyId, SecretAccessKey, Token, Expiration } = parseJson(response.body);
    // All four, as the SDK requires: without an Expiration they would be cached for good.
    const expiration = typeof Expiration === 'string' ? new Date(Expiration) : undefined;
    if (
      !nonEmpty(AccessKeyId) ||
      !nonEmpty(SecretAccessKey) ||
      !nonEmpty(Token) ||
      expiration === undefined ||
      Number.isNaN(expiration.getTime())
    ) {
      throw new CredentialsError(
        'The container credentials endpoint answered no complete AccessKeyId, SecretAccessKey, Token and Expiration',
      );
    }
    return { accessKeyId: AccessKeyId, secretAccessKey: SecretAccessKey, sessionToken: Token, expiration };
  };
  // One more attempt, as the SDK makes, for an endpoint that is briefly busy.
  return attempt().catch(attempt);
}

function parseJson(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === 'object' && value !== null) return value as Record<string, unknown>;
  } catch {
    // Reported below.
  }
  throw new CredentialsError('The container credentials endpoint answered something other than JSON');
}

function nonEmpty(value: unknown): value is string {
  return typeof value === 'string' && value !== '';
}

function stillFresh(credentials: ContainerCredentials): boolean {
  return credentials.expiration.getTime() - Date.now() > REFRESH_BEFORE_EXPIRY_MS;
}

/** The SDK's default chain; `defaultProvider` is what `fromNodeProviderChain` wraps. */
async function loadDefaultSdkChain(): Promise<CredentialProvider> {
  const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
  return defaultProvider();
}

export interface CredentialProviderOptions {
  /**
   * Loads the SDK's chain of steps 0 and 3, once, when first needed.
   * @default the chain of `@aws-sdk/credential-provider-node`, imported then
   */
  readonly loadSdkChain?: () => Promise<CredentialProvider>;
}

/**
 * A credential provider with its own cache. The environment is read on every call (it is only a
 * lookup), so a test may change it; the SDK chain reads `process.env` itself.
 */
export function createCredentialProvider(
  env: Env = process.env,
  { loadSdkChain = loadDefaultSdkChain }: CredentialProviderOptions = {},
): CredentialProvider {
  let container: ContainerCredentials | undefined;
  let fetching: Promise<ContainerCredentials> | undefined;
  let sdkChain: Promise<CredentialProvider> | undefined;

  const fromSdkChain = async (): Promise<AwsCredentials> => {
    sdkChain ??= loadSdkChain().catch((error: unknown) => {
      sdkChain = undefined;
      throw error;
    });
    const credentials = await (await sdkChain)();
    return {
      accessKeyId: credentials.accessKeyId,
      secretAccessKey: credentials.secretAccessKey,
      sessionToken: credentials.sessionToken,
      expiration: credentials.expiration,
    };
  };

  return async () => {
    if (setting(env, 'AWS_PROFILE') !== undefined) return fromSdkChain();

    const fromEnvironment = environmentCredentials(env);
    if (fromEnvironment) return fromEnvironment;

    const url = containerCredentialsUrl(env);
    if (url !== undefined) {
      if (container && stillFresh(container)) return container;
      fetching ??= fetchContainerCredentials(url, env)
        .then((credentials) => {
          container = credentials;
          return credentials;
        })
        .finally(() => {
          fetching = undefined;
        });
      return fetching;
    }

    return fromSdkChain();
  };
}
