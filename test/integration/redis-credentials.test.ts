import { afterAll, describe, expect, it } from 'vitest';
import { apiEvent } from '../support/events';
import { reply, startFakeSecretsManager } from '../support/fake-secrets-manager';
import { loadHandler } from '../support/handlers';
import { spawnRedisServer } from '../support/redis-server';

// A password-protected Redis whose URL comes from Secrets Manager, as deployed.
const REDIS_ARN = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:redis-url-AbCdEf';
const redisServer = await spawnRedisServer({ password: 'rotated-password' });
const secretsManager = await startFakeSecretsManager();
Object.assign(process.env, secretsManager.env);
process.env.REDIS_SECRET_ARN = REDIS_ARN;
delete process.env.REDIS_URL;

const getSystem = await loadHandler('get-system');
afterAll(async () => {
  await secretsManager.close();
  await redisServer.dispose();
});

const withPassword = (password: string) => redisServer.url.replace('redis://', `redis://:${password}@`);
const request = () => getSystem(apiEvent({ resource: '/system', path: '/system', apiKeyId: 'tenant-a' }));

describe('when Redis refuses the password', () => {
  it('answers 503, then reads the secret again and serves with the rotated password', async () => {
    secretsManager.enqueue(REDIS_ARN, reply.secret(withPassword('old-password')));
    secretsManager.put(REDIS_ARN, withPassword('rotated-password'));

    const refused = await request();
    const served = await request();

    expect(refused.statusCode).toBe(503);
    expect(JSON.parse(refused.body).error.code).toBe('storage_unavailable');
    expect(served.statusCode).toBe(200);
    expect(secretsManager.readsOf(REDIS_ARN)).toBe(2);
    expect(secretsManager.refusals).toEqual([]);
  });
});
