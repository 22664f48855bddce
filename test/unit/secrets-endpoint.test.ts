import { describe, expect, it } from 'vitest';
import {
  SecretsManagerEndpointError,
  secretsManagerEndpoint,
} from '../../functions/shared/secrets-manager-client';

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
    expect(() => secretsManagerEndpoint('chat-proxy/openai', {})).toThrow(SecretsManagerEndpointError);
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
    expect(endpoint('x', { AWS_REGION: 'us-gov-west-1', AWS_USE_FIPS_ENDPOINT: 'true' }).url).toBe(
      'https://secretsmanager-fips.us-gov-west-1.amazonaws.com/',
    );
  });

  it('fails naming the variables for FIPS in a China region, which has no FIPS endpoint', () => {
    const china = 'arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x-AbC123';

    expect(() => secretsManagerEndpoint(china, { AWS_USE_FIPS_ENDPOINT: 'true' })).toThrow(
      SecretsManagerEndpointError,
    );
    expect(() => secretsManagerEndpoint(china, { AWS_USE_FIPS_ENDPOINT: 'true' })).toThrow(
      /no FIPS endpoint in cn-north-1 .*AWS_USE_FIPS_ENDPOINT.*AWS_ENDPOINT_URL_SECRETS_MANAGER/,
    );
    expect(
      endpoint(china, {
        AWS_USE_FIPS_ENDPOINT: 'true',
        AWS_ENDPOINT_URL_SECRETS_MANAGER: 'https://sm.internal',
      }).url,
    ).toBe('https://sm.internal/');
  });

  it.each(['us-iso-east-1', 'us-isob-east-1', 'us-isof-south-1', 'eu-isoe-west-1', 'eusc-de-east-1'])(
    'fails naming AWS_ENDPOINT_URL_SECRETS_MANAGER in %s, whose endpoints it does not build',
    (region) => {
      expect(() => secretsManagerEndpoint('x', { AWS_REGION: region })).toThrow(SecretsManagerEndpointError);
      expect(() => secretsManagerEndpoint('x', { AWS_REGION: region })).toThrow(
        new RegExp(`region ${region} \\(from AWS_REGION\\): set AWS_ENDPOINT_URL_SECRETS_MANAGER`),
      );
      expect(
        endpoint('x', { AWS_REGION: region, AWS_ENDPOINT_URL_SECRETS_MANAGER: 'https://sm.internal' }),
      ).toEqual({ url: 'https://sm.internal/', region });
    },
  );

  it('keeps the regional hosts with AWS_USE_DUALSTACK_ENDPOINT=true: they are dual-stack already', () => {
    const dualStack = { AWS_USE_DUALSTACK_ENDPOINT: 'true' };

    expect(endpoint(ARN, dualStack).url).toBe('https://secretsmanager.eu-west-1.amazonaws.com/');
    expect(endpoint(ARN, { ...dualStack, AWS_USE_FIPS_ENDPOINT: 'true' }).url).toBe(
      'https://secretsmanager-fips.eu-west-1.amazonaws.com/',
    );
    expect(endpoint('x', { ...dualStack, AWS_REGION: 'cn-northwest-1' }).url).toBe(
      'https://secretsmanager.cn-northwest-1.amazonaws.com.cn/',
    );
  });

  it.each(['AWS_USE_FIPS_ENDPOINT', 'AWS_USE_DUALSTACK_ENDPOINT', 'AWS_IGNORE_CONFIGURED_ENDPOINT_URLS'])(
    'fails naming %s when it is neither true nor false',
    (name) => {
      expect(() => secretsManagerEndpoint(ARN, { [name]: 'yes' })).toThrow(
        new RegExp(`^${name} must be true or false$`),
      );
      expect(endpoint(ARN, { [name]: 'false' }).url).toBe('https://secretsmanager.eu-west-1.amazonaws.com/');
    },
  );

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
    expect(() => secretsManagerEndpoint(ARN, { AWS_ENDPOINT_URL: 'not a url' })).toThrow(
      SecretsManagerEndpointError,
    );
  });
});
