import { describe, expect, it } from 'vitest';
import { type SignableRequest, signRequest } from '../../functions/shared/aws-sigv4';

// Cases of AWS's published Signature Version 4 test suite (aws-sig-v4-test-suite), with its
// example credentials, region, service and date; the expected values are the suite's .authz files
// unless a case says where its value comes from.
const SUITE_CREDENTIALS = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
};
const SUITE_DATE = new Date('2015-08-30T12:36:00Z');
const SUITE_SCOPE = 'Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request';
/** The session token of the suite's post-sts-token cases. */
const SUITE_SESSION_TOKEN =
  'AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==';

const suiteRequest = (overrides: Partial<SignableRequest>): SignableRequest => ({
  method: 'GET',
  url: new URL('https://example.amazonaws.com/'),
  headers: {},
  body: '',
  region: 'us-east-1',
  service: 'service',
  ...overrides,
});

describe('signRequest', () => {
  it('matches the test suite\'s "get-vanilla" case', () => {
    const headers = signRequest(suiteRequest({}), SUITE_CREDENTIALS, SUITE_DATE);

    expect(headers).toEqual({
      host: 'example.amazonaws.com',
      'x-amz-date': '20150830T123600Z',
      authorization: `AWS4-HMAC-SHA256 ${SUITE_SCOPE}, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31`,
    });
  });

  it('matches the "post-x-www-form-urlencoded" case: a body and a content type', () => {
    const headers = signRequest(
      suiteRequest({
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: 'Param1=value1',
      }),
      SUITE_CREDENTIALS,
      SUITE_DATE,
    );

    expect(headers.authorization).toBe(
      `AWS4-HMAC-SHA256 ${SUITE_SCOPE}, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a`,
    );
    expect(headers['content-type']).toBe('application/x-www-form-urlencoded');
  });

  it('matches the "post-sts-header-before" case: the session token sent and signed', () => {
    const headers = signRequest(
      suiteRequest({ method: 'POST' }),
      { ...SUITE_CREDENTIALS, sessionToken: SUITE_SESSION_TOKEN },
      SUITE_DATE,
    );

    expect(headers['x-amz-security-token']).toBe(SUITE_SESSION_TOKEN);
    expect(headers.authorization).toBe(
      `AWS4-HMAC-SHA256 ${SUITE_SCOPE}, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead`,
    );
  });

  it('matches the "get-vanilla-query-order-key-case" case: query parameters sorted', () => {
    const headers = signRequest(
      suiteRequest({ url: new URL('https://example.amazonaws.com/?Param2=value2&Param1=value1') }),
      SUITE_CREDENTIALS,
      SUITE_DATE,
    );

    expect(headers.authorization).toBe(
      `AWS4-HMAC-SHA256 ${SUITE_SCOPE}, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500`,
    );
  });

  it('signs the port as part of host when it is not the default', () => {
    const headers = signRequest(
      suiteRequest({ url: new URL('http://127.0.0.1:4566/') }),
      SUITE_CREDENTIALS,
      SUITE_DATE,
    );

    expect(headers.host).toBe('127.0.0.1:4566');
  });

  it('matches the "get-slash-dot-slash" case: dot segments are not signed', () => {
    const headers = signRequest(
      suiteRequest({ url: new URL('https://example.amazonaws.com/./') }),
      SUITE_CREDENTIALS,
      SUITE_DATE,
    );

    expect(headers.authorization).toBe(
      `AWS4-HMAC-SHA256 ${SUITE_SCOPE}, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31`,
    );
  });

  it('matches the "get-header-value-trim" case: values trimmed, inner whitespace collapsed', () => {
    const headers = signRequest(
      suiteRequest({ headers: { 'My-Header1': ' value1', 'My-Header2': ' "a   b   c"' } }),
      SUITE_CREDENTIALS,
      SUITE_DATE,
    );

    expect(headers.authorization).toBe(
      `AWS4-HMAC-SHA256 ${SUITE_SCOPE}, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736`,
    );
  });

  // The suite's "get-utf8" (GET /ሴ) and "get-space" (GET /example space/) put the raw path on the
  // request line and sign it encoded once (8318018e... and 65248758...). A URL always carries the
  // path percent-encoded (/%E1%88%B4, /example%20space/), and every service but S3 signs the path
  // on the wire encoded once more. The expected values are the AWS SDK's signer's for these paths
  // (@smithy/signature-v4 5.7.5, applyChecksum off), which also gives the suite's values for the raw paths.
  it.each([
    ['get-utf8', '/ሴ', '697b34846207a3f72246f99d74ae1ee4fe54f44bb06730c58a0d339eb079596d'],
    ['get-space', '/example space/', '446b817944c553435b35e813c261ff4e161fff982d1bacdef1c87f6785dd1662'],
  ])('signs the "%s" case\'s path as it goes on the wire, encoded once more', (_, path, signature) => {
    const headers = signRequest(
      suiteRequest({ url: new URL(`https://example.amazonaws.com${path}`) }),
      SUITE_CREDENTIALS,
      SUITE_DATE,
    );

    expect(headers.authorization).toBe(
      `AWS4-HMAC-SHA256 ${SUITE_SCOPE}, SignedHeaders=host;x-amz-date, Signature=${signature}`,
    );
  });

  it("signs a GetSecretValue request as the AWS SDK's signer does: region, service, body and token", () => {
    // Expected value computed with @smithy/signature-v4 5.7.5 (applyChecksum off) for the same request.
    const headers = signRequest(
      {
        method: 'POST',
        url: new URL('https://secretsmanager.eu-west-1.amazonaws.com/'),
        headers: {
          'content-type': 'application/x-amz-json-1.1',
          'x-amz-target': 'secretsmanager.GetSecretValue',
        },
        body: '{"SecretId":"chat-proxy/openai"}',
        region: 'eu-west-1',
        service: 'secretsmanager',
      },
      { ...SUITE_CREDENTIALS, sessionToken: SUITE_SESSION_TOKEN },
      SUITE_DATE,
    );

    expect(headers.authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/secretsmanager/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=bb2b7bbf900197a6087b692ea92c9fe9750e9064163b84dcc8d88f5b6dff4fff',
    );
  });
});
