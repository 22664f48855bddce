import { describe, expect, it } from 'vitest';
import { type SignableRequest, signRequest } from '../../functions/shared/aws-sigv4';

// Cases of AWS's published Signature Version 4 test suite (aws-sig-v4-test-suite), with its
// example credentials, region, service and date; the expected values are the suite's .authz files.
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

  it('changes the signature with the region, the service and the body', () => {
    const signature = (overrides: Partial<SignableRequest>) =>
      signRequest(suiteRequest({ method: 'POST', ...overrides }), SUITE_CREDENTIALS, SUITE_DATE)
        .authorization;

    const base = signature({});
    expect(signature({ region: 'eu-west-1' })).not.toBe(base);
    expect(signature({ service: 'secretsmanager' })).not.toBe(base);
    expect(signature({ body: '{}' })).not.toBe(base);
  });
});
