import { describe, expect, it } from 'vitest';
import { secretsManagerEndpoint } from '../../functions/shared/secrets';

const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:chat-proxy/openai-AbC123';

const endpoint = (secretId: string, env: Record<string, string>) => {
  const { url, region } = secretsManagerEndpoint(secretId, env);
  return { url: url.href, region };
};

describe('secretsManagerEndpoint', () => {
  it("takes the region from the secret's ARN, over AWS_REGION", () => {
    expect(endpoint(ARN, { AWS_REGION: 'us-east-1' })).toEqual({
      url: 'https://secretsmanager.eu-west-1.amazonaws.com/',
      region: 'eu-west-1',
    });
  });

  it('takes AWS_REGION, else AWS_DEFAULT_REGION, for a secret named without an ARN', () => {
    expect(
      endpoint('chat-proxy/openai', { AWS_REGION: 'us-west-2', AWS_DEFAULT_REGION: 'eu-central-1' }),
    ).toEqual({ url: 'https://secretsmanager.us-west-2.amazonaws.com/', region: 'us-west-2' });
    expect(endpoint('chat-proxy/openai', { AWS_DEFAULT_REGION: 'eu-central-1' }).region).toBe('eu-central-1');
  });

  it('fails naming AWS_REGION when there is no region at all', () => {
    expect(() => secretsManagerEndpoint('chat-proxy/openai', {})).toThrow(/AWS_REGION/);
  });

  it('uses the China partition domain in cn- regions', () => {
    expect(endpoint('arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x-AbC123', {}).url).toBe(
      'https://secretsmanager.cn-north-1.amazonaws.com.cn/',
    );
  });

  it('uses the FIPS endpoint with AWS_USE_FIPS_ENDPOINT=true', () => {
    expect(endpoint(ARN, { AWS_USE_FIPS_ENDPOINT: 'true' }).url).toBe(
      'https://secretsmanager-fips.eu-west-1.amazonaws.com/',
    );
  });

  it('goes to AWS_ENDPOINT_URL_SECRETS_MANAGER, else AWS_ENDPOINT_URL, still signing for the region', () => {
    expect(
      endpoint(ARN, {
        AWS_ENDPOINT_URL: 'http://127.0.0.1:5000',
        AWS_ENDPOINT_URL_SECRETS_MANAGER: 'https://secrets.internal.example',
        AWS_USE_FIPS_ENDPOINT: 'true',
      }),
    ).toEqual({ url: 'https://secrets.internal.example/', region: 'eu-west-1' });
    expect(endpoint(ARN, { AWS_ENDPOINT_URL: 'http://127.0.0.1:5000' }).url).toBe('http://127.0.0.1:5000/');
  });

  it('ignores the configured endpoints with AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true', () => {
    expect(
      endpoint(ARN, {
        AWS_ENDPOINT_URL: 'http://127.0.0.1:5000',
        AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: 'true',
      }).url,
    ).toBe('https://secretsmanager.eu-west-1.amazonaws.com/');
  });

  it('rejects a configured endpoint that is not an http(s) URL', () => {
    expect(() => secretsManagerEndpoint(ARN, { AWS_ENDPOINT_URL: 'localhost:4566' })).toThrow(
      /AWS_ENDPOINT_URL/,
    );
    expect(() => secretsManagerEndpoint(ARN, { AWS_ENDPOINT_URL: 'not a url' })).toThrow(/AWS_ENDPOINT_URL/);
  });
});
