import { App } from 'aws-cdk-lib';
import { Period } from 'aws-cdk-lib/aws-apigateway';
import { describe, expect, it } from 'vitest';
import { readStackConfig, readStackName } from '../../infra/config';
import { appMetrics } from '../../infra/constructs/monitoring';
import { APP_USER_ACCESS_STRING } from '../../infra/store-access';
import { cdkJsonContext, synthesize } from './synth';

function configFrom(context: Record<string, unknown>) {
  return readStackConfig(new App({ context }).node);
}

describe('readStackConfig', () => {
  it('uses the documented defaults when the context sets nothing', () => {
    const config = configFrom({});

    expect(config).toEqual({
      openAiModel: 'gpt-4.1-mini',
      openAiModerationModel: undefined,
      openAiSecretArn: undefined,
      redisSecretArn: undefined,
      stageName: 'prod',
      apiKeys: ['default'],
      throttleRateLimit: 10,
      throttleBurstLimit: 20,
      quotaLimit: 10_000,
      quotaPeriod: Period.DAY,
      storage: 'external',
      redisCluster: false,
      memoryDb: {
        nodeType: 'db.t4g.small',
        shards: 1,
        replicasPerShard: 1,
        accessString: APP_USER_ACCESS_STRING,
      },
      natGateways: 2,
      corsOrigins: undefined,
      wafRateLimit: undefined,
      alarmEmail: undefined,
      chat: {
        models: undefined,
        maxContextTokens: undefined,
        ttlDays: undefined,
        temperature: undefined,
        maxTokens: undefined,
        logContent: false,
      },
    });
  });

  it('reads the chat settings', () => {
    const config = configFrom({
      openAiModels: 'gpt-4o-mini,gpt-5-mini',
      maxContextTokens: '16000',
      chatTtlDays: 30,
      openAiTemperature: '0.3',
      openAiMaxTokens: 800,
      logContent: 'true',
    });

    expect(config.chat).toEqual({
      models: ['gpt-4o-mini', 'gpt-5-mini'],
      maxContextTokens: 16_000,
      ttlDays: 30,
      temperature: 0.3,
      maxTokens: 800,
      logContent: true,
    });
  });

  it.each([
    ['maxContextTokens', '50'],
    ['chatTtlDays', '-1'],
    ['openAiTemperature', '3'],
    ['openAiMaxTokens', '0.5'],
    ['logContent', 'yes'],
    ['openAiModels', 'gpt 4'],
  ])('refuses %s=%s naming the key', (key, value) => {
    expect(() => configFrom({ [key]: value })).toThrow(new RegExp(`"${key}"`));
  });

  it('accepts the context in cdk.json', () => {
    expect(() => configFrom(cdkJsonContext)).not.toThrow();
  });

  it('accepts the strings that `cdk synth -c key=value` passes', () => {
    const config = configFrom({
      apiKeys: 'tenant-a, tenant-b',
      throttleRateLimit: '2.5',
      throttleBurstLimit: '5',
      quotaLimit: '100',
      quotaPeriod: 'month',
    });

    expect(config).toMatchObject({
      apiKeys: ['tenant-a', 'tenant-b'],
      throttleRateLimit: 2.5,
      throttleBurstLimit: 5,
      quotaLimit: 100,
      quotaPeriod: Period.MONTH,
    });
  });

  it('accepts the strings `-c` passes for storage, CORS, WAF, alarms and the MemoryDB size', () => {
    const config = configFrom({
      storage: 'Provisioned',
      memoryDbNodeType: 'db.r7g.large',
      memoryDbShards: '2',
      memoryDbReplicasPerShard: '0',
      memoryDbAccessString: 'ON resetkeys ~chat-proxy:* &* +@all',
      natGateways: '1',
      corsOrigins: 'https://app.example.com, http://localhost:5173',
      wafRateLimit: '2000',
      alarmEmail: 'ops@example.com',
    });

    expect(config).toMatchObject({
      storage: 'provisioned',
      memoryDb: {
        nodeType: 'db.r7g.large',
        shards: 2,
        replicasPerShard: 0,
        accessString: 'ON resetkeys ~chat-proxy:* &* +@all',
      },
      natGateways: 1,
      corsOrigins: ['https://app.example.com', 'http://localhost:5173'],
      wafRateLimit: 2000,
      alarmEmail: 'ops@example.com',
    });
  });

  it('leaves CORS off for an empty list, and accepts "*" alone', () => {
    expect(configFrom({ corsOrigins: [] }).corsOrigins).toBeUndefined();
    expect(configFrom({ corsOrigins: '*' }).corsOrigins).toEqual(['*']);
  });

  it('accepts apiKeys as a JSON array string', () => {
    expect(configFrom({ apiKeys: '["a","b"]' }).apiKeys).toEqual(['a', 'b']);
  });

  it.each([
    { key: 'throttleRateLimit', value: 'fast' },
    { key: 'throttleRateLimit', value: 0 },
    { key: 'throttleBurstLimit', value: 1.5 },
    { key: 'quotaLimit', value: -1 },
    { key: 'quotaPeriod', value: 'YEAR' },
    { key: 'stageName', value: 'prod/v1' },
    { key: 'openAiModel', value: 'gpt 4' },
    { key: 'apiKeys', value: [] },
    { key: 'apiKeys', value: ['has space'] },
    { key: 'apiKeys', value: ['tenant-a', 'tenant_a'] },
    { key: 'apiKeys', value: '[not json' },
    { key: 'openAiSecretArn', value: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:openai' },
    { key: 'redisSecretArn', value: 'chat-proxy/redis' },
    { key: 'storage', value: 'redis' },
    { key: 'memoryDbNodeType', value: 'cache.t4g.small' },
    { key: 'memoryDbShards', value: 0 },
    { key: 'memoryDbReplicasPerShard', value: 6 },
    { key: 'memoryDbAccessString', value: '+@all' },
    { key: 'memoryDbAccessString', value: 'on reset ~* +@all' },
    { key: 'memoryDbAccessString', value: 'on ~* +@all >secret' },
    { key: 'natGateways', value: 3 },
    { key: 'corsOrigins', value: ['https://app.example.com/'] },
    { key: 'corsOrigins', value: ['app.example.com'] },
    { key: 'corsOrigins', value: ['*', 'https://app.example.com'] },
    { key: 'wafRateLimit', value: 5 },
    { key: 'wafRateLimit', value: 'lots' },
    { key: 'alarmEmail', value: 'ops' },
  ])('rejects $key = $value with an error naming the key', ({ key, value }) => {
    expect(() => configFrom({ [key]: value })).toThrow(`Invalid CDK context "${key}"`);
  });

  it('refuses a Redis secret ARN with storage "provisioned", whose URL secret the stack creates', () => {
    expect(() =>
      configFrom({
        storage: 'provisioned',
        redisSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:chat-proxy/redis-XyZ789',
      }),
    ).toThrow('Invalid CDK context "redisSecretArn"');
  });

  it('stops the stack from synthesizing when a setting is invalid', () => {
    expect(() => synthesize({ quotaPeriod: 'YEAR' })).toThrow('Invalid CDK context "quotaPeriod"');
  });
});

describe('readStackName', () => {
  const named = (stackName?: unknown) =>
    readStackName(new App({ context: stackName === undefined ? {} : { stackName } }).node);

  it('names the stack ChatProxy unless the context names it', () => {
    expect(named()).toBe('ChatProxy');
    expect(named('')).toBe('ChatProxy');
    expect(named('ChatProxy-staging')).toBe('ChatProxy-staging');
  });

  it('refuses a name CloudFormation or the names built from it would not take', () => {
    for (const bad of ['1proxy', 'chat_proxy', 'chat proxy', 'x'.repeat(65), 42, 'chat-proxy']) {
      expect(() => named(bad), String(bad)).toThrow('Invalid CDK context "stackName"');
    }
  });
});

describe('appMetrics', () => {
  it("makes each other stack's service dimension its own name, unique like the stack's, in one namespace", () => {
    expect(appMetrics('ChatProxy')).toEqual({ namespace: 'ChatProxy', service: 'chat-proxy' });
    const others = ['ChatProxy-staging', 'ChatProxyStaging', 'chatproxy'].map(
      (name) => appMetrics(name).service,
    );
    expect(others).toEqual(['ChatProxy-staging', 'ChatProxyStaging', 'chatproxy']);
  });
});
