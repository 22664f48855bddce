import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, describe, expect, it } from 'vitest';
import { apiEvent } from '../support/events';
import { loadHandler } from '../support/handlers';
import { spawnRedisServer } from '../support/redis-server';

// A password-protected Redis whose URL comes from Secrets Manager, as deployed.
const REDIS_ARN = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:redis-url-AbCdEf';
const redisServer = await spawnRedisServer({ password: 'rotated-password' });
const secretsManager = mockClient(SecretsManagerClient);
process.env.REDIS_SECRET_ARN = REDIS_ARN;
delete process.env.REDIS_URL;

const getSystem = await loadHandler('get-system');
afterAll(() => redisServer.dispose());

const withPassword = (password: string) => redisServer.url.replace('redis://', `redis://:${password}@`);
const request = () => getSystem(apiEvent({ resource: '/system', path: '/system', apiKeyId: 'tenant-a' }));

describe('when Redis refuses the password', () => {
  it('answers 503, then reads the secret again and serves with the rotated password', async () => {
    secretsManager
      .on(GetSecretValueCommand, { SecretId: REDIS_ARN })
      .resolvesOnce({ SecretString: withPassword('old-password') })
      .resolves({ SecretString: withPassword('rotated-password') });

    const refused = await request();
    const served = await request();

    expect(refused.statusCode).toBe(503);
    expect(JSON.parse(refused.body).error.code).toBe('storage_unavailable');
    expect(served.statusCode).toBe(200);
    expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });
});
