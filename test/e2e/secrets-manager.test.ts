import {
  CreateSecretCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecretsUnavailableError } from '../../functions/shared/errors';
import { apiEvent, uniqueId } from '../support/events';
import { type FakeOpenAi, openAiError, startFakeOpenAi } from '../support/fake-openai';
import { type Invoke, loadHandler } from '../support/handlers';
import { type MotoServer, motoAvailable, spawnMotoServer } from '../support/moto';

// Secrets Manager end to end: the functions' own signed GetSecretValue client, over HTTP, against
// moto_server (the SDK only creates and rotates the secrets). On CI it must run; on a laptop
// without moto it is skipped with a message rather than failing the suite.
const available = motoAvailable();
if (!available) {
  if (process.env.CI === 'true') throw new Error('moto_server is required on CI but is not on PATH');
  console.warn('moto_server is not on PATH: skipping the Secrets Manager end-to-end tests');
}

describe.runIf(available)('Secrets Manager end to end (moto_server)', () => {
  let moto: MotoServer;
  let fake: FakeOpenAi;
  let admin: SecretsManagerClient;
  let openAiSecretArn: string;
  let postChat: Invoke;
  let getSecretString: (secretId: string) => Promise<string>;

  beforeAll(async () => {
    moto = await spawnMotoServer();
    fake = await startFakeOpenAi();
    Object.assign(process.env, {
      AWS_ENDPOINT_URL: moto.endpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'us-east-1',
      OPENAI_BASE_URL: fake.baseURL,
    });
    admin = new SecretsManagerClient({ endpoint: moto.endpoint });
    const openAi = await admin.send(
      new CreateSecretCommand({ Name: uniqueId('openai'), SecretString: 'sk-first' }),
    );
    const redis = await admin.send(
      new CreateSecretCommand({ Name: uniqueId('redis'), SecretString: process.env.REDIS_URL as string }),
    );
    openAiSecretArn = openAi.ARN as string;
    process.env.OPENAI_SECRET_ARN = openAiSecretArn;
    process.env.REDIS_SECRET_ARN = redis.ARN as string;
    delete process.env.OPENAI_API_KEY;
    delete process.env.REDIS_URL;
    postChat = await loadHandler('post-chat');
    ({ getSecretString } = await import('../../functions/shared/secrets'));
  });

  afterAll(async () => {
    admin?.destroy();
    await fake?.close();
    await moto?.stop();
  });

  const turn = () =>
    postChat(
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/chat',
        chatId: uniqueId('c'),
        apiKeyId: 'tenant-moto',
        json: { content: 'hi' },
      }),
    );

  it('runs a turn with the OpenAI key and Redis URL read from their secrets', async () => {
    const result = await turn();

    expect(result.statusCode).toBe(200);
    expect(fake.requests.at(-1)?.headers.authorization).toBe('Bearer sk-first');
  });

  it('picks up a rotated key without downtime when OpenAI rejects the old one', async () => {
    await admin.send(new PutSecretValueCommand({ SecretId: openAiSecretArn, SecretString: 'sk-second' }));
    fake.reset();
    fake.respondWith((request) =>
      request.headers.authorization === 'Bearer sk-first'
        ? { status: 401, body: openAiError('revoked', 'invalid_api_key') }
        : undefined,
    );

    const result = await turn();

    expect(result.statusCode).toBe(200);
    expect(fake.requests.map((request) => request.headers.authorization)).toEqual([
      'Bearer sk-first',
      'Bearer sk-second',
    ]);
  });

  it('answers SecretsUnavailableError for a secret moto does not have, naming its error type', async () => {
    const missing = openAiSecretArn.replace(/secret:.*$/, 'secret:missing-AbCdEf');

    const error = await getSecretString(missing).catch((reason: unknown) => reason);

    expect(error).toBeInstanceOf(SecretsUnavailableError);
    expect((error as Error).cause).toMatchObject({ type: 'ResourceNotFoundException' });
  });
});
