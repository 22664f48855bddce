import type { AddressInfo } from 'node:net';
import { createServer, type Socket } from 'node:net';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SecretsUnavailableError } from '../../functions/shared/errors';
import { apiEvent, uniqueId } from '../support/events';
import { openAiError, startFakeOpenAi } from '../support/fake-openai';
import { reply, type SecretsManagerReply, startFakeSecretsManager } from '../support/fake-secrets-manager';
import { loadHandler } from '../support/handlers';

const OPENAI_ARN = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:openai-key-AbCdEf';
const REDIS_ARN = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:redis-url-AbCdEf';
const TTL_MS = 60_000;

const fake = await startFakeOpenAi();
const secretsManager = await startFakeSecretsManager();
const redisUrl = process.env.REDIS_URL as string;
Object.assign(process.env, secretsManager.env);
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.OPENAI_SECRET_ARN = OPENAI_ARN;
process.env.REDIS_SECRET_ARN = REDIS_ARN;
process.env.SECRET_CACHE_TTL_MS = String(TTL_MS);
delete process.env.OPENAI_API_KEY;
delete process.env.REDIS_URL;

const postChat = await loadHandler('post-chat');
const postMod = await loadHandler('post-mod');
// The same module instances the handlers use (one per test file).
const { getSecretString } = await import('../../functions/shared/secrets');
const { createSecretsManagerClient } = await import('../../functions/shared/secrets-manager-client');
const { logger } = await import('../../functions/shared/observability');

afterAll(async () => {
  vi.useRealTimers();
  await fake.close();
  await secretsManager.close();
});

const keyOf = (request: { headers: Record<string, unknown> }) => String(request.headers.authorization);
const turn = () =>
  postChat(
    apiEvent({
      method: 'POST',
      resource: '/{chat_id}/chat',
      chatId: uniqueId('c'),
      apiKeyId: uniqueId('t'),
      json: { content: 'hi' },
    }),
  );
const moderation = () =>
  postMod(
    apiEvent({
      method: 'POST',
      resource: '/mod',
      path: '/mod',
      apiKeyId: 'tenant-a',
      json: { content: 'hi' },
    }),
  );
/** The error a failed read rejects with, for its cause. */
const failureOf = async (read: Promise<string>) => {
  const error = await read.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(SecretsUnavailableError);
  return error as SecretsUnavailableError;
};

// The module caches across tests on purpose (it is a per-container cache); each test moves the
// clock past the TTL first so it starts from a cold cache.
beforeEach(() => {
  fake.reset();
  secretsManager.reset();
  secretsManager.put(REDIS_ARN, redisUrl);
  vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + TTL_MS + 1 });
});

afterEach(() => {
  // Every request the functions sent was well formed and correctly signed.
  expect(secretsManager.refusals).toEqual([]);
});

describe('the OpenAI key from Secrets Manager', () => {
  it('is read once and reused within the cache TTL', async () => {
    secretsManager.put(OPENAI_ARN, 'sk-one');

    expect((await turn()).statusCode).toBe(200);
    expect((await moderation()).statusCode).toBe(200);

    expect(secretsManager.readsOf(OPENAI_ARN)).toBe(1);
    expect(fake.requests.map(keyOf)).toEqual(['Bearer sk-one', 'Bearer sk-one']);
  });

  it('is read again after the TTL, picking up a rotated key', async () => {
    secretsManager.enqueue(OPENAI_ARN, reply.secret('sk-old'));
    secretsManager.put(OPENAI_ARN, 'sk-new');
    await moderation();

    vi.setSystemTime(Date.now() + TTL_MS + 1);
    await moderation();

    expect(fake.requests.map(keyOf)).toEqual(['Bearer sk-old', 'Bearer sk-new']);
  });

  it('is read again at once when OpenAI answers 401, and the request succeeds with the new key', async () => {
    secretsManager.enqueue(OPENAI_ARN, reply.secret('sk-revoked'));
    secretsManager.put(OPENAI_ARN, 'sk-rotated');
    fake.respondWith((request) =>
      keyOf(request) === 'Bearer sk-revoked'
        ? { status: 401, body: openAiError('bad key', 'invalid_api_key') }
        : undefined,
    );

    const result = await turn();

    expect(result.statusCode).toBe(200);
    expect(secretsManager.readsOf(OPENAI_ARN)).toBe(2);
    expect(fake.requests.map(keyOf)).toEqual(['Bearer sk-revoked', 'Bearer sk-rotated']);
  });

  it('answers 502 upstream_auth_failed when the refreshed key is rejected too, with one refresh only', async () => {
    secretsManager.put(OPENAI_ARN, 'sk-bad');
    fake.respondWith(() => ({ status: 401, body: openAiError('bad key', 'invalid_api_key') }));

    const result = await moderation();

    expect(result.statusCode).toBe(502);
    expect(JSON.parse(result.body).error.code).toBe('upstream_auth_failed');
    expect(secretsManager.readsOf(OPENAI_ARN)).toBe(2);
  });

  it('answers 503 secrets_unavailable when Secrets Manager fails and nothing is cached', async () => {
    secretsManager.put(OPENAI_ARN, reply.serverError());

    const result = await moderation();

    expect(result.statusCode).toBe(503);
    expect(JSON.parse(result.body)).toEqual({
      error: { code: 'secrets_unavailable', message: expect.any(String) },
    });
    expect(fake.requests).toEqual([]);
  });

  it('keeps serving with the key cached within the TTL while Secrets Manager is down', async () => {
    secretsManager.enqueue(OPENAI_ARN, reply.secret('sk-cached'));
    secretsManager.put(OPENAI_ARN, reply.serverError());
    await moderation();

    const result = await moderation();

    expect(result.statusCode).toBe(200);
    expect(fake.requests.map(keyOf)).toEqual(['Bearer sk-cached', 'Bearer sk-cached']);
  });

  it('answers 503 secrets_unavailable when the secret has no string value', async () => {
    secretsManager.put(OPENAI_ARN, reply.secret(undefined));

    expect((await moderation()).statusCode).toBe(503);
  });
});

describe('the Redis URL from Secrets Manager', () => {
  it('connects with the URL read from the secret', async () => {
    secretsManager.put(OPENAI_ARN, 'sk-one');

    expect((await turn()).statusCode).toBe(200);
  });
});

describe('getSecretString', () => {
  const secretId = () => `arn:aws:secretsmanager:us-east-1:000000000000:secret:${uniqueId('s')}-AbCdEf`;

  it('sends a SigV4-signed GetSecretValue with the session token among the signed headers', async () => {
    const id = secretId();
    secretsManager.put(id, 'value');

    expect(await getSecretString(id)).toBe('value');

    expect(secretsManager.reads).toEqual([
      {
        secretId: id,
        signedHeaders: ['content-type', 'host', 'x-amz-date', 'x-amz-security-token', 'x-amz-target'],
        sessionToken: secretsManager.env.AWS_SESSION_TOKEN,
      },
    ]);
  });

  it('shares one request among concurrent callers', async () => {
    const id = secretId();
    secretsManager.put(id, 'value');

    const values = await Promise.all([getSecretString(id), getSecretString(id), getSecretString(id)]);

    expect(values).toEqual(['value', 'value', 'value']);
    expect(secretsManager.readsOf(id)).toBe(1);
  });

  it('reads again with forceRefresh, even within the TTL', async () => {
    const id = secretId();
    secretsManager.enqueue(id, reply.secret('first'));
    secretsManager.put(id, 'second');

    expect(await getSecretString(id)).toBe('first');
    expect(await getSecretString(id)).toBe('first');
    expect(await getSecretString(id, { forceRefresh: true })).toBe('second');
    expect(secretsManager.readsOf(id)).toBe(2);
  });

  it.each<[string, SecretsManagerReply]>([
    ['a server error', reply.serverError()],
    ['throttling', reply.throttled()],
    ['HTTP 429', reply.tooManyRequests()],
    ['a dropped connection', reply.drop()],
  ])('retries once after %s', async (_, failure) => {
    const id = secretId();
    secretsManager.enqueue(id, failure);
    secretsManager.put(id, 'value');

    expect(await getSecretString(id)).toBe('value');
    expect(secretsManager.readsOf(id)).toBe(2);
  });

  it('gives up after the second failed attempt, naming the error type in the cause', async () => {
    const id = secretId();
    secretsManager.put(id, reply.throttled());

    const error = await failureOf(getSecretString(id));

    expect(secretsManager.readsOf(id)).toBe(2);
    expect(String((error.cause as Error).message)).toMatch(
      /^GetSecretValue failed: ThrottlingException \(HTTP 400/,
    );
  });

  it.each<[string, SecretsManagerReply, string]>([
    ['a secret that does not exist', reply.notFound(), 'ResourceNotFoundException'],
    ['access denied', reply.accessDenied(), 'AccessDeniedException'],
  ])('does not retry %s, and keeps account data out of the error', async (_, failure, type) => {
    const id = secretId();
    secretsManager.put(id, failure);

    const error = await failureOf(getSecretString(id));

    expect(secretsManager.readsOf(id)).toBe(1);
    const cause = error.cause as Error & { type: string; status: number };
    expect(cause).toMatchObject({ type, status: 400 });
    expect(cause.message).not.toMatch(/\d{12}|arn:/);
  });

  it('is refused, and not retried, when signed with the wrong key', async () => {
    const id = secretId();
    secretsManager.put(id, 'value');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'not-the-key');
    try {
      const error = await failureOf(getSecretString(id));

      expect(error.cause).toMatchObject({ type: 'InvalidSignatureException' });
      expect(secretsManager.refusals).toEqual(['signature does not match']);
    } finally {
      vi.unstubAllEnvs();
      secretsManager.refusals.length = 0;
    }
  });

  it.each<[string, Record<string, string | undefined>, string]>([
    [
      'an endpoint that does not exist (FIPS in China)',
      { AWS_ENDPOINT_URL: undefined, AWS_USE_FIPS_ENDPOINT: 'true', AWS_REGION: 'cn-north-1' },
      'SecretsManagerEndpointError',
    ],
    [
      'credentials that cannot be had',
      {
        AWS_PROFILE: undefined,
        AWS_ACCESS_KEY_ID: undefined,
        AWS_CONTAINER_CREDENTIALS_FULL_URI: 'http://credentials.example.com/x',
      },
      'CredentialsError',
    ],
  ])('answers SecretsUnavailableError, without the value, for %s', async (_, variables, causeName) => {
    const id = `chat-proxy/${uniqueId('s')}`;
    secretsManager.put(id, 'sk-never-read');
    for (const [name, value] of Object.entries(variables)) vi.stubEnv(name, value);
    try {
      const error = await failureOf(getSecretString(id));

      expect(error.cause).toMatchObject({ name: causeName });
      expect(error.message).not.toContain('sk-never-read');
      expect(secretsManager.readsOf(id)).toBe(0);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe('the Secrets Manager client', () => {
  const secretId = () => `arn:aws:secretsmanager:us-east-1:000000000000:secret:${uniqueId('s')}-AbCdEf`;
  /** Timeouts far below the deployed 1 s and 2 s, so these tests take a fraction of a second. */
  const fastClient = (env: Record<string, string | undefined> = process.env) =>
    createSecretsManagerClient({ env, connectTimeoutMs: 100, requestTimeoutMs: 150 });
  const rejectionOf = (read: Promise<unknown>) =>
    read.then(
      () => undefined,
      (reason: unknown) => reason as Error,
    );

  it('gives up after two attempts when Secrets Manager accepts the request and never answers', async () => {
    const id = secretId();
    secretsManager.put(id, reply.hang());
    const started = performance.now();

    const error = await rejectionOf(fastClient().getSecretValue(id));

    expect(performance.now() - started).toBeLessThan(1000);
    expect(error).toMatchObject({ name: 'HttpTimeoutError', message: 'No complete response within 150 ms' });
    expect(secretsManager.readsOf(id)).toBe(2);
  });

  it('gives up after two attempts when the TLS connection never completes', async () => {
    const sockets: Socket[] = [];
    const silent = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    const started = performance.now();
    try {
      const client = createSecretsManagerClient({
        env: { ...secretsManager.env, AWS_ENDPOINT_URL: `https://127.0.0.1:${port}` },
        connectTimeoutMs: 100,
        requestTimeoutMs: 5000,
      });

      const error = await rejectionOf(client.getSecretValue(secretId()));

      expect(performance.now() - started).toBeLessThan(1000);
      expect(error).toMatchObject({ name: 'HttpTimeoutError', message: 'No connection within 100 ms' });
      expect(sockets).toHaveLength(2);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it("signs again with Secrets Manager's time when it refuses a skewed clock, and keeps the correction", async () => {
    const [first, second] = [secretId(), secretId()];
    secretsManager.put(first, 'sk-skew-first');
    secretsManager.put(second, 'sk-skew-second');
    secretsManager.setClockOffset(20 * 60_000);
    const warn = vi.spyOn(logger, 'warn');
    try {
      const client = fastClient();

      expect(await client.getSecretValue(first)).toBe('sk-skew-first');
      expect(await client.getSecretValue(second)).toBe('sk-skew-second');

      expect(secretsManager.refusals).toEqual([expect.stringMatching(/^x-amz-date \d{8}T\d{6}Z$/)]);
      expect(secretsManager.reads.map((read) => read.secretId)).toEqual([first, second]);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/clock skew/), {
        errorType: 'InvalidSignatureException',
        skewMs: expect.closeTo(20 * 60_000, -4),
        clockOffsetMs: expect.closeTo(20 * 60_000, -4),
      });
      expect(JSON.stringify(warn.mock.calls)).not.toMatch(/sk-skew|fake\/secret/);
    } finally {
      warn.mockRestore();
      secretsManager.refusals.length = 0;
    }
  });

  it('after correcting the clock, gives up on a refusal that is not about time (a wrong key)', async () => {
    const id = secretId();
    secretsManager.put(id, 'value');
    secretsManager.setClockOffset(-20 * 60_000);
    try {
      const error = await rejectionOf(
        fastClient({ ...process.env, AWS_SECRET_ACCESS_KEY: 'not-the-key' }).getSecretValue(id),
      );

      expect(error).toMatchObject({ type: 'InvalidSignatureException' });
      expect(secretsManager.refusals).toEqual([
        expect.stringMatching(/^x-amz-date /),
        'signature does not match',
      ]);
    } finally {
      secretsManager.refusals.length = 0;
    }
  });
});
