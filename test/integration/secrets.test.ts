import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { openAiError, startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';

const OPENAI_ARN = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:openai-key-AbCdEf';
const REDIS_ARN = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:redis-url-AbCdEf';
const TTL_MS = 60_000;

const fake = await startFakeOpenAi();
const secretsManager = mockClient(SecretsManagerClient);
const redisUrl = process.env.REDIS_URL as string;
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.OPENAI_SECRET_ARN = OPENAI_ARN;
process.env.REDIS_SECRET_ARN = REDIS_ARN;
process.env.SECRET_CACHE_TTL_MS = String(TTL_MS);
delete process.env.OPENAI_API_KEY;
delete process.env.REDIS_URL;

const postChat = await loadHandler('post-chat');
const postMod = await loadHandler('post-mod');

afterAll(async () => {
  vi.useRealTimers();
  await fake.close();
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
const openAiReads = () =>
  secretsManager
    .commandCalls(GetSecretValueCommand)
    .filter((call) => call.args[0].input.SecretId === OPENAI_ARN);

// The module caches across tests on purpose (it is a per-container cache); each test moves the
// clock past the TTL first so it starts from a cold cache.
beforeEach(() => {
  fake.reset();
  secretsManager.reset();
  secretsManager.on(GetSecretValueCommand, { SecretId: REDIS_ARN }).resolves({ SecretString: redisUrl });
  vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + TTL_MS + 1 });
});

describe('the OpenAI key from Secrets Manager', () => {
  it('is read once and reused within the cache TTL', async () => {
    secretsManager.on(GetSecretValueCommand, { SecretId: OPENAI_ARN }).resolves({ SecretString: 'sk-one' });

    expect((await turn()).statusCode).toBe(200);
    expect((await moderation()).statusCode).toBe(200);

    expect(openAiReads()).toHaveLength(1);
    expect(fake.requests.map(keyOf)).toEqual(['Bearer sk-one', 'Bearer sk-one']);
  });

  it('is read again after the TTL, picking up a rotated key', async () => {
    secretsManager
      .on(GetSecretValueCommand, { SecretId: OPENAI_ARN })
      .resolvesOnce({ SecretString: 'sk-old' })
      .resolves({ SecretString: 'sk-new' });
    await moderation();

    vi.setSystemTime(Date.now() + TTL_MS + 1);
    await moderation();

    expect(fake.requests.map(keyOf)).toEqual(['Bearer sk-old', 'Bearer sk-new']);
  });

  it('is read again at once when OpenAI answers 401, and the request succeeds with the new key', async () => {
    secretsManager
      .on(GetSecretValueCommand, { SecretId: OPENAI_ARN })
      .resolvesOnce({ SecretString: 'sk-revoked' })
      .resolves({ SecretString: 'sk-rotated' });
    fake.respondWith((request) =>
      keyOf(request) === 'Bearer sk-revoked'
        ? { status: 401, body: openAiError('bad key', 'invalid_api_key') }
        : undefined,
    );

    const result = await turn();

    expect(result.statusCode).toBe(200);
    expect(openAiReads()).toHaveLength(2);
    expect(fake.requests.map(keyOf)).toEqual(['Bearer sk-revoked', 'Bearer sk-rotated']);
  });

  it('answers 502 upstream_auth_failed when the refreshed key is rejected too, with one refresh only', async () => {
    secretsManager.on(GetSecretValueCommand, { SecretId: OPENAI_ARN }).resolves({ SecretString: 'sk-bad' });
    fake.respondWith(() => ({ status: 401, body: openAiError('bad key', 'invalid_api_key') }));

    const result = await moderation();

    expect(result.statusCode).toBe(502);
    expect(JSON.parse(result.body).error.code).toBe('upstream_auth_failed');
    expect(openAiReads()).toHaveLength(2);
  });

  it('answers 503 secrets_unavailable when Secrets Manager fails and nothing is cached', async () => {
    secretsManager
      .on(GetSecretValueCommand, { SecretId: OPENAI_ARN })
      .rejects(new Error('endpoint unreachable'));

    const result = await moderation();

    expect(result.statusCode).toBe(503);
    expect(JSON.parse(result.body)).toEqual({
      error: { code: 'secrets_unavailable', message: expect.any(String) },
    });
    expect(fake.requests).toEqual([]);
  });

  it('keeps serving with the cached key while Secrets Manager is down', async () => {
    secretsManager
      .on(GetSecretValueCommand, { SecretId: OPENAI_ARN })
      .resolvesOnce({ SecretString: 'sk-cached' })
      .rejects(new Error('endpoint unreachable'));
    await moderation();

    const result = await moderation();

    expect(result.statusCode).toBe(200);
    expect(fake.requests.map(keyOf)).toEqual(['Bearer sk-cached', 'Bearer sk-cached']);
  });

  it('answers 503 secrets_unavailable when the secret has no string value', async () => {
    secretsManager.on(GetSecretValueCommand, { SecretId: OPENAI_ARN }).resolves({});

    expect((await moderation()).statusCode).toBe(503);
  });
});

describe('the Redis URL from Secrets Manager', () => {
  it('connects with the URL read from the secret', async () => {
    secretsManager.on(GetSecretValueCommand, { SecretId: OPENAI_ARN }).resolves({ SecretString: 'sk-one' });

    expect((await turn()).statusCode).toBe(200);
  });
});
