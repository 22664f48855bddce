import { describe, expect, it } from 'vitest';
import { ConfigError, loadLimits, loadOpenAiConfig, loadRedisConfig } from '../../functions/shared/config';

describe('loadRedisConfig', () => {
  it('prefers REDIS_URL, for local runs', () => {
    expect(loadRedisConfig({ REDIS_URL: 'redis://x:1', REDIS_SECRET_ARN: 'arn' }).url).toEqual({
      value: 'redis://x:1',
    });
  });

  it('takes the secret ARN when deployed', () => {
    expect(loadRedisConfig({ REDIS_SECRET_ARN: 'arn:aws:secretsmanager:x' }).url).toEqual({
      secretArn: 'arn:aws:secretsmanager:x',
    });
  });

  it('fails fast naming both variables when neither is set', () => {
    expect(() => loadRedisConfig({})).toThrow(
      new ConfigError('Missing configuration: set REDIS_SECRET_ARN (deployed) or REDIS_URL (local)'),
    );
  });

  it('rejects a key prefix that could break the key layout', () => {
    expect(() => loadRedisConfig({ REDIS_URL: 'redis://x', REDIS_KEY_PREFIX: 'a{b}' })).toThrow(
      /REDIS_KEY_PREFIX/,
    );
  });
});

describe('loadOpenAiConfig', () => {
  it('defaults the model, moderation model, timeout and retries', () => {
    expect(loadOpenAiConfig({ OPENAI_API_KEY: 'sk' })).toMatchObject({
      model: 'gpt-4.1-mini',
      moderationModel: 'omni-moderation-latest',
      timeoutMs: 25_000,
      maxRetries: 0,
      temperature: undefined,
      maxTokens: undefined,
    });
  });

  it('reads overrides', () => {
    expect(
      loadOpenAiConfig({
        OPENAI_API_KEY: 'sk',
        OPENAI_MODEL: 'gpt-4o',
        OPENAI_TEMPERATURE: '0.5',
        OPENAI_MAX_TOKENS: '300',
      }),
    ).toMatchObject({ model: 'gpt-4o', temperature: 0.5, maxTokens: 300 });
  });

  it.each([
    ['OPENAI_TEMPERATURE', '3'],
    ['OPENAI_TEMPERATURE', 'warm'],
    ['OPENAI_MAX_TOKENS', '1.5'],
    ['OPENAI_TIMEOUT_MS', '-1'],
  ])('rejects %s=%s naming the variable', (name, value) => {
    expect(() => loadOpenAiConfig({ OPENAI_API_KEY: 'sk', [name]: value })).toThrow(new RegExp(name));
  });
});

describe('loadLimits', () => {
  it('has documented defaults', () => {
    expect(loadLimits({})).toEqual({
      maxBodyBytes: 524_288,
      maxContentChars: 100_000,
      maxUrlChars: 2048,
      maxChatIdLength: 128,
    });
  });

  it('treats an empty variable as unset', () => {
    expect(loadLimits({ MAX_BODY_BYTES: '' }).maxBodyBytes).toBe(524_288);
  });
});
