import { createHash, createHmac } from 'node:crypto';

/**
 * AWS Signature Version 4, header form, for the AWS calls the functions make without the SDK (see
 * secrets.ts for why). Checked against AWS's published test suite in test/unit/aws-sigv4.test.ts.
 */

/** An access key pair and, for temporary credentials, the session token that goes with it. */
export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string | undefined;
  /** When temporary credentials stop working; unset for long-term keys. */
  readonly expiration?: Date | undefined;
}

export interface SignableRequest {
  readonly method: string;
  /** Where the request goes: its host (with the port, unless the default) is signed as `host`. */
  readonly url: URL;
  /** Headers to sign besides `host`, `x-amz-date` and `x-amz-security-token`. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  readonly region: string;
  readonly service: string;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';

/**
 * The headers to send with `request`: its own (names lower-cased), `host`, `x-amz-date`,
 * `x-amz-security-token` when the credentials have a session token, and `authorization`. All but
 * `authorization` are signed, the session token included (as STS-issued credentials require).
 */
export function signRequest(
  request: SignableRequest,
  credentials: AwsCredentials,
  now: Date = new Date(),
): Record<string, string> {
  const amzDate = now.toISOString().replace(/[-:]|\.\d{3}/g, '');
  const day = amzDate.slice(0, 8);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) headers[name.toLowerCase()] = value;
  headers.host = request.url.host;
  headers['x-amz-date'] = amzDate;
  if (credentials.sessionToken) headers['x-amz-security-token'] = credentials.sessionToken;

  const names = Object.keys(headers).sort();
  const signedHeaders = names.join(';');
  const canonicalRequest = [
    request.method.toUpperCase(),
    canonicalPath(request.url),
    canonicalQuery(request.url),
    ...names.map((name) => `${name}:${(headers[name] ?? '').trim().replace(/\s+/g, ' ')}`),
    '',
    signedHeaders,
    sha256Hex(request.body),
  ].join('\n');
  const scope = `${day}/${request.region}/${request.service}/aws4_request`;
  const stringToSign = [ALGORITHM, amzDate, scope, sha256Hex(canonicalRequest)].join('\n');

  let key: Buffer = hmac(`AWS4${credentials.secretAccessKey}`, day);
  for (const part of [request.region, request.service, 'aws4_request']) key = hmac(key, part);
  const signature = createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');

  headers.authorization = `${ALGORITHM} Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
  return headers;
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

function sha256Hex(data: string): string {
  return createHash('sha256').update(data, 'utf8').digest('hex');
}

/** RFC 3986 encoding: `encodeURIComponent` leaves `!'()*` alone, SigV4 does not. */
function encode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * Every service but S3 signs the path with each segment encoded once more; `URL` has already
 * encoded it once and removed the `.` and `..` segments.
 */
function canonicalPath(url: URL): string {
  const path = url.pathname === '' ? '/' : url.pathname;
  return path.split('/').map(encode).join('/');
}

function canonicalQuery(url: URL): string {
  return [...url.searchParams]
    .map(([name, value]) => [encode(name), encode(value)] as const)
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
}
