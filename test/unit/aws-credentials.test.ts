import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  CredentialsError,
  containerCredentialsUrl,
  createCredentialProvider,
} from '../../functions/shared/aws-credentials';

/** A container credentials endpoint: answers its queued replies first, then fresh credentials. */
const requests: IncomingHttpHeaders[] = [];
const queued: { status: number; body: unknown }[] = [];
let expiresInMs = 3600_000;
const server = createServer((req, res) => {
  requests.push(req.headers);
  const next = queued.shift() ?? {
    status: 200,
    body: {
      AccessKeyId: `ASIA${requests.length}`,
      SecretAccessKey: 'container-secret',
      Token: 'container-token',
      Expiration: new Date(Date.now() + expiresInMs).toISOString(),
    },
  };
  res.writeHead(next.status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(next.body));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const containerUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/credentials`;
const scratch = mkdtempSync(join(tmpdir(), 'chat-proxy-credentials-'));

afterAll(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  requests.length = 0;
  queued.length = 0;
  expiresInMs = 3600_000;
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllEnvs();
});

describe('createCredentialProvider', () => {
  it('takes the key pair and session token from the environment first', async () => {
    const credentials = createCredentialProvider({
      AWS_ACCESS_KEY_ID: 'AKIAENV',
      AWS_SECRET_ACCESS_KEY: 'env-secret',
      AWS_SESSION_TOKEN: 'env-token',
      AWS_CONTAINER_CREDENTIALS_FULL_URI: containerUri,
    });

    expect(await credentials()).toEqual({
      accessKeyId: 'AKIAENV',
      secretAccessKey: 'env-secret',
      sessionToken: 'env-token',
    });
    expect(requests).toEqual([]);
  });

  it('reads the container endpoint with its authorization token when the environment has half a key', async () => {
    const credentials = createCredentialProvider({
      AWS_ACCESS_KEY_ID: 'AKIAENV',
      AWS_CONTAINER_CREDENTIALS_FULL_URI: containerUri,
      AWS_CONTAINER_AUTHORIZATION_TOKEN: 'Bearer from-variable',
    });

    expect(await credentials()).toMatchObject({
      accessKeyId: 'ASIA1',
      secretAccessKey: 'container-secret',
      sessionToken: 'container-token',
      expiration: expect.any(Date),
    });
    expect(requests[0]?.authorization).toBe('Bearer from-variable');
  });

  it('prefers the authorization token file, read afresh on each fetch', async () => {
    const tokenFile = join(scratch, 'token');
    writeFileSync(tokenFile, 'from-file\n');
    const credentials = createCredentialProvider({
      AWS_CONTAINER_CREDENTIALS_FULL_URI: containerUri,
      AWS_CONTAINER_AUTHORIZATION_TOKEN: 'from-variable',
      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: tokenFile,
    });

    await credentials();

    expect(requests[0]?.authorization).toBe('from-file');
  });

  it('reuses container credentials until five minutes before they expire', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2030-01-01T00:00:00Z') });
    const credentials = createCredentialProvider({ AWS_CONTAINER_CREDENTIALS_FULL_URI: containerUri });

    await Promise.all([credentials(), credentials()]);
    vi.setSystemTime(new Date('2030-01-01T00:54:00Z'));
    expect((await credentials()).accessKeyId).toBe('ASIA1');
    vi.setSystemTime(new Date('2030-01-01T00:56:00Z'));
    expect((await credentials()).accessKeyId).toBe('ASIA2');

    expect(requests).toHaveLength(2);
  });

  it('tries the container endpoint once more after a failure', async () => {
    queued.push({ status: 500, body: { message: 'busy' } });
    const credentials = createCredentialProvider({ AWS_CONTAINER_CREDENTIALS_FULL_URI: containerUri });

    expect((await credentials()).accessKeyId).toBe('ASIA2');
  });

  it('fails with CredentialsError when the container endpoint fails twice', async () => {
    queued.push({ status: 500, body: {} }, { status: 200, body: { Code: 'Failure' } });
    const credentials = createCredentialProvider({ AWS_CONTAINER_CREDENTIALS_FULL_URI: containerUri });

    await expect(credentials()).rejects.toThrow(CredentialsError);
    expect(requests).toHaveLength(2);
  });

  it.each<[string, Record<string, unknown>]>([
    ['no Token', { Token: undefined }],
    ['an empty Token', { Token: '' }],
    ['no Expiration', { Expiration: undefined }],
    ['an Expiration that is not a date', { Expiration: 'soon' }],
    ['no AccessKeyId', { AccessKeyId: undefined }],
    ['no SecretAccessKey', { SecretAccessKey: undefined }],
  ])('refuses container credentials with %s', async (_, change) => {
    const answer = {
      status: 200,
      body: {
        AccessKeyId: 'ASIAPARTIAL',
        SecretAccessKey: 'container-secret',
        Token: 'container-token',
        Expiration: new Date(Date.now() + expiresInMs).toISOString(),
        ...change,
      },
    };
    queued.push(answer, answer);
    const credentials = createCredentialProvider({ AWS_CONTAINER_CREDENTIALS_FULL_URI: containerUri });

    const error = await credentials().catch((reason: unknown) => reason);

    expect(error).toBeInstanceOf(CredentialsError);
    expect((error as Error).message).not.toContain('container-secret');
    expect(requests).toHaveLength(2);
  });

  it('never sends the authorization token off the metadata address for a relative URI', async () => {
    const credentials = createCredentialProvider({
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: containerUri,
      AWS_CONTAINER_AUTHORIZATION_TOKEN: 'Bearer not-for-you',
    });

    await expect(credentials()).rejects.toThrow(CredentialsError);
    expect(requests).toEqual([]);
  });

  it('with AWS_PROFILE set, takes the profile from the SDK chain, not the keys in the environment', async () => {
    const loadSdkChain = vi.fn(async () => async () => ({
      accessKeyId: 'AKIAPROFILE',
      secretAccessKey: 'profile-secret',
    }));
    const credentials = createCredentialProvider(
      {
        AWS_PROFILE: 'chat-proxy-dev',
        AWS_ACCESS_KEY_ID: 'AKIAENV',
        AWS_SECRET_ACCESS_KEY: 'env-secret',
        AWS_CONTAINER_CREDENTIALS_FULL_URI: containerUri,
      },
      { loadSdkChain },
    );

    expect(await credentials()).toMatchObject({ accessKeyId: 'AKIAPROFILE' });
    expect(loadSdkChain).toHaveBeenCalledTimes(1);
    expect(requests).toEqual([]);
  });

  it('without AWS_PROFILE, never loads the SDK chain when the environment has the keys', async () => {
    const loadSdkChain = vi.fn(async () => async () => ({ accessKeyId: 'AKIACHAIN', secretAccessKey: 'x' }));
    const credentials = createCredentialProvider(
      { AWS_ACCESS_KEY_ID: 'AKIAENV', AWS_SECRET_ACCESS_KEY: 'env-secret' },
      { loadSdkChain },
    );

    expect((await credentials()).accessKeyId).toBe('AKIAENV');
    expect(loadSdkChain).not.toHaveBeenCalled();
  });

  it("falls back to the SDK's chain, e.g. a profile in the shared credentials file", async () => {
    const credentialsFile = join(scratch, 'credentials');
    writeFileSync(
      credentialsFile,
      '[chat-proxy-test]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profile-secret\n',
    );
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']) {
      vi.stubEnv(name, undefined);
    }
    vi.stubEnv('AWS_SHARED_CREDENTIALS_FILE', credentialsFile);
    vi.stubEnv('AWS_CONFIG_FILE', join(scratch, 'no-config'));
    vi.stubEnv('AWS_PROFILE', 'chat-proxy-test');

    const credentials = createCredentialProvider({});

    expect(await credentials()).toMatchObject({
      accessKeyId: 'AKIAPROFILE',
      secretAccessKey: 'profile-secret',
    });
  });
});

describe('containerCredentialsUrl', () => {
  it('resolves a relative URI against the ECS metadata address', () => {
    expect(
      containerCredentialsUrl({ AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/abc' })?.href,
    ).toBe('http://169.254.170.2/v2/credentials/abc');
  });

  it('keeps a protocol-relative URI on the ECS metadata address, as a path', () => {
    const url = containerCredentialsUrl({ AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '//evil.example/x' });

    expect(url?.hostname).toBe('169.254.170.2');
    expect(url?.pathname).toBe('//evil.example/x');
  });

  it.each(['http://evil.example/x', 'https://evil.example/x', '@evil.example/x', 'v2/credentials'])(
    'refuses a relative URI that would leave the ECS metadata address: %s',
    (relative) => {
      expect(() => containerCredentialsUrl({ AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: relative })).toThrow(
        /AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/,
      );
      expect(() => containerCredentialsUrl({ AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: relative })).toThrow(
        CredentialsError,
      );
    },
  );

  it('accepts a full URI over https anywhere, over http only to a local or metadata address', () => {
    const url = (uri: string) => () => containerCredentialsUrl({ AWS_CONTAINER_CREDENTIALS_FULL_URI: uri });

    expect(url('https://credentials.example.com/x')()?.host).toBe('credentials.example.com');
    expect(url('http://169.254.170.23/v1/credentials')()?.host).toBe('169.254.170.23');
    expect(url('http://127.0.0.1:8080/creds')()?.port).toBe('8080');
    expect(url('http://credentials.example.com/x')).toThrow(CredentialsError);
    expect(url('not a url')).toThrow(CredentialsError);
  });

  it('is undefined when no container endpoint is configured', () => {
    expect(containerCredentialsUrl({})).toBeUndefined();
  });
});
