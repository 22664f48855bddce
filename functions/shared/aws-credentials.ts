import { readFile } from 'node:fs/promises';
import { sendRequest } from './aws-http';
import type { AwsCredentials } from './aws-sigv4';

/**
 * The credentials the functions sign their AWS calls with, found as the SDK would find them, in
 * this order:
 *
 * 1. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`: what Lambda and
 *    `sam local` give a function, so the deployed path never leaves this module.
 * 2. The container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`),
 *    as under Lambda SnapStart, ECS or EKS Pod Identity; cached until shortly before they expire.
 * 3. Anything else (a profile, SSO, web identity, EC2 instance metadata): the SDK's own chain,
 *    imported only then. It is not bundled; the Lambda runtime ships it, a developer's
 *    node_modules has it, and no deployed function ever reaches this step.
 */

type Env = Readonly<Record<string, string | undefined>>;

export type CredentialProvider = () => Promise<AwsCredentials>;

/** Container credentials are fetched again when they have less than this left. */
const REFRESH_BEFORE_EXPIRY_MS = 5 * 60_000;
const CONTAINER_TIMEOUT_MS = 1000;
/** The ECS task metadata address that `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is relative to. */
const ECS_CONTAINER_HOST = 'http://169.254.170.2';
/** Plain-HTTP endpoints the SDK accepts for `AWS_CONTAINER_CREDENTIALS_FULL_URI`: no credentials leave the host. */
const LOCAL_CONTAINER_HOSTS = new Set([
  '169.254.170.2',
  '169.254.170.23',
  '[fd00:ec2::23]',
  'localhost',
  '[::1]',
]);

export class CredentialsError extends Error {
  override readonly name = 'CredentialsError';
}

function setting(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
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
  if (relative !== undefined) return new URL(relative, ECS_CONTAINER_HOST);
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

async function fetchContainerCredentials(url: URL, env: Env): Promise<AwsCredentials> {
  const attempt = async (): Promise<AwsCredentials> => {
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
    if (typeof AccessKeyId !== 'string' || typeof SecretAccessKey !== 'string') {
      throw new CredentialsError(
        'The container credentials endpoint answered no AccessKeyId/SecretAccessKey',
      );
    }
    const expiration = typeof Expiration === 'string' ? new Date(Expiration) : undefined;
    return {
      accessKeyId: AccessKeyId,
      secretAccessKey: SecretAccessKey,
      sessionToken: typeof Token === 'string' && Token !== '' ? Token : undefined,
      expiration: expiration && !Number.isNaN(expiration.getTime()) ? expiration : undefined,
    };
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

function stillFresh(credentials: AwsCredentials): boolean {
  return (
    credentials.expiration === undefined ||
    credentials.expiration.getTime() - Date.now() > REFRESH_BEFORE_EXPIRY_MS
  );
}

/**
 * A credential provider with its own cache. The environment is read on every call (it is only a
 * lookup), so a test may change it; the SDK chain of step 3 reads `process.env` itself.
 */
export function createCredentialProvider(env: Env = process.env): CredentialProvider {
  let container: AwsCredentials | undefined;
  let fetching: Promise<AwsCredentials> | undefined;
  let sdkChain: Promise<CredentialProvider> | undefined;

  return async () => {
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

    // `defaultProvider` is the chain `fromNodeProviderChain` (@aws-sdk/credential-providers) wraps.
    sdkChain ??= import('@aws-sdk/credential-provider-node').then(
      ({ defaultProvider }) => defaultProvider(),
      (error: unknown) => {
        sdkChain = undefined;
        throw error;
      },
    );
    const credentials = await (await sdkChain)();
    return {
      accessKeyId: credentials.accessKeyId,
      secretAccessKey: credentials.secretAccessKey,
      sessionToken: credentials.sessionToken,
      expiration: credentials.expiration,
    };
  };
}
