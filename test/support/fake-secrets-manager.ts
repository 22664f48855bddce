import { createHash, createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A fake Secrets Manager that speaks GetSecretValue over HTTP, for the functions' own client to
 * talk to. It checks every request as AWS would (target, content type, SigV4 signature with the
 * fake's key, session token, scope, x-amz-date against its own clock), with its own signature
 * code rather than the client's, and answers stored secrets or scripted failures: errors,
 * throttling, dropped connections, hangs. Every answer carries its clock in `Date`, as AWS's do.
 */

/** What the fake answers to one read. */
export type SecretsManagerReply =
  | { readonly secretString: string | undefined }
  | { readonly status: number; readonly type: string; readonly message?: string }
  | { readonly hang: true }
  | { readonly drop: true };

/** Replies for `put` and `enqueue`. */
export const reply = {
  secret: (secretString: string | undefined): SecretsManagerReply => ({ secretString }),
  serverError: (): SecretsManagerReply => ({
    status: 500,
    type: 'InternalServiceError',
    message: 'An error occurred on the server side.',
  }),
  throttled: (): SecretsManagerReply => ({
    status: 400,
    type: 'ThrottlingException',
    message: 'Rate exceeded',
  }),
  tooManyRequests: (): SecretsManagerReply => ({ status: 429, type: 'TooManyRequestsException' }),
  notFound: (): SecretsManagerReply => ({
    status: 400,
    type: 'ResourceNotFoundException',
    message: "Secrets Manager can't find the specified secret.",
  }),
  accessDenied: (): SecretsManagerReply => ({
    status: 400,
    type: 'AccessDeniedException',
    message:
      'User: arn:aws:sts::123456789012:assumed-role/fn/fn is not authorized to perform: secretsmanager:GetSecretValue',
  }),
  /** Never answers: the client's timeout must fire. */
  hang: (): SecretsManagerReply => ({ hang: true }),
  /** Resets the connection without an answer. */
  drop: (): SecretsManagerReply => ({ drop: true }),
};

/** A GetSecretValue request that passed every check. */
export interface ReceivedRead {
  readonly secretId: string;
  /** Lower-case names of the signed headers. */
  readonly signedHeaders: readonly string[];
  readonly sessionToken: string | undefined;
}

export interface FakeSecretsManager {
  readonly endpoint: string;
  /** The variables that point the functions at this fake and sign with its key. */
  readonly env: Readonly<Record<string, string>>;
  /** Every read that passed the checks, in order. */
  readonly reads: ReceivedRead[];
  /** Why requests were refused (bad signature, target, token...): a client bug, so tests expect none. */
  readonly refusals: string[];
  readsOf(secretId: string): number;
  /** What every read of `secretId` answers once its queue is empty: a value or a reply. */
  put(secretId: string, value: string | SecretsManagerReply): void;
  /** Replies for the next reads of `secretId`, in order, before the stored one. */
  enqueue(secretId: string, ...replies: SecretsManagerReply[]): void;
  /** Runs the fake's clock `offsetMs` ahead of this process's (behind if negative): a client clock that is off. */
  setClockOffset(offsetMs: number): void;
  /** Forgets secrets, queues, reads and refusals, and sets the clock right. */
  reset(): void;
  close(): Promise<void>;
}

export interface FakeSecretsManagerOptions {
  /** The region requests must be signed for. @default 'us-east-1' */
  readonly region?: string;
  /** Without one, requests must carry no x-amz-security-token. @default a fixed test token */
  readonly sessionToken?: string | undefined;
}

const ACCESS_KEY_ID = 'AKIDFAKESECRETSMANAGER';
const SECRET_ACCESS_KEY = 'fake/secret+access/key';
const DEFAULT_SESSION_TOKEN = 'FwoGZXIvYXdzEXAMPLE//session+token==';
const MAX_SKEW_MS = 15 * 60_000;

export async function startFakeSecretsManager(
  options: FakeSecretsManagerOptions = {},
): Promise<FakeSecretsManager> {
  const region = options.region ?? 'us-east-1';
  const sessionToken = 'sessionToken' in options ? options.sessionToken : DEFAULT_SESSION_TOKEN;
  const stored = new Map<string, SecretsManagerReply>();
  const queues = new Map<string, SecretsManagerReply[]>();
  const reads: ReceivedRead[] = [];
  const refusals: string[] = [];
  let clockOffsetMs = 0;
  const now = () => Date.now() + clockOffsetMs;

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      res.setHeader('date', new Date(now()).toUTCString());
      const body = Buffer.concat(chunks).toString('utf8');
      const refusal = check(req, body, region, sessionToken, now());
      if (refusal !== undefined) {
        refusals.push(refusal.message);
        send(res, { status: refusal.status, type: refusal.type, message: refusal.message });
        return;
      }
      const secretId = String((JSON.parse(body) as { SecretId: string }).SecretId);
      reads.push({
        secretId,
        signedHeaders: signedHeadersOf(req),
        sessionToken: header(req, 'x-amz-security-token'),
      });
      const next = queues.get(secretId)?.shift() ?? stored.get(secretId) ?? reply.notFound();
      send(res, next, secretId);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    endpoint,
    env: {
      AWS_ENDPOINT_URL: endpoint,
      AWS_ACCESS_KEY_ID: ACCESS_KEY_ID,
      AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
      ...(sessionToken === undefined ? {} : { AWS_SESSION_TOKEN: sessionToken }),
      AWS_REGION: region,
    },
    reads,
    refusals,
    readsOf: (secretId) => reads.filter((read) => read.secretId === secretId).length,
    put: (secretId, value) => {
      stored.set(secretId, typeof value === 'string' ? reply.secret(value) : value);
    },
    enqueue: (secretId, ...replies) => {
      queues.set(secretId, [...(queues.get(secretId) ?? []), ...replies]);
    },
    setClockOffset: (offsetMs) => {
      clockOffsetMs = offsetMs;
    },
    reset: () => {
      stored.clear();
      queues.clear();
      reads.length = 0;
      refusals.length = 0;
      clockOffsetMs = 0;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function send(res: ServerResponse, answer: SecretsManagerReply, secretId?: string): void {
  if ('hang' in answer) return;
  if ('drop' in answer) {
    res.socket?.destroy();
    return;
  }
  const requestId = `fake-${Math.random().toString(16).slice(2, 10)}`;
  if ('secretString' in answer) {
    const body = {
      ARN: secretId,
      Name: secretId?.split(':').at(-1),
      VersionId: requestId,
      ...(answer.secretString === undefined ? {} : { SecretString: answer.secretString }),
      VersionStages: ['AWSCURRENT'],
      CreatedDate: Date.now() / 1000,
    };
    res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': requestId });
    res.end(JSON.stringify(body));
    return;
  }
  res.writeHead(answer.status, {
    'content-type': 'application/x-amz-json-1.1',
    'x-amzn-requestid': requestId,
  });
  res.end(JSON.stringify({ __type: answer.type, message: answer.message ?? answer.type }));
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/;

function signedHeadersOf(req: IncomingMessage): string[] {
  return AUTHORIZATION.exec(header(req, 'authorization') ?? '')?.[5]?.split(';') ?? [];
}

interface Refusal {
  readonly status: number;
  readonly type: string;
  readonly message: string;
}

/** The checks AWS makes before it looks at the secret; undefined when the request passes them all. */
function check(
  req: IncomingMessage,
  body: string,
  region: string,
  sessionToken: string | undefined,
  now: number,
): Refusal | undefined {
  const refuse = (type: string, message: string, status = 400): Refusal => ({ status, type, message });
  if (req.method !== 'POST' || req.url !== '/')
    return refuse('UnknownOperationException', `${req.method} ${req.url}`);
  if (header(req, 'x-amz-target') !== 'secretsmanager.GetSecretValue') {
    return refuse('UnknownOperationException', `x-amz-target ${header(req, 'x-amz-target')}`);
  }
  if (header(req, 'content-type') !== 'application/x-amz-json-1.1') {
    return refuse('SerializationException', `content-type ${header(req, 'content-type')}`);
  }
  let secretId: unknown;
  try {
    secretId = (JSON.parse(body) as { SecretId?: unknown }).SecretId;
  } catch {
    return refuse('SerializationException', 'body is not JSON');
  }
  if (typeof secretId !== 'string' || secretId === '') return refuse('ValidationException', 'no SecretId');

  const match = AUTHORIZATION.exec(header(req, 'authorization') ?? '');
  if (!match) return refuse('IncompleteSignatureException', 'missing or malformed Authorization');
  const [, accessKeyId, day, scopeRegion, service, signedList = '', signature] = match;
  if (accessKeyId !== ACCESS_KEY_ID)
    return refuse('UnrecognizedClientException', `access key ${accessKeyId}`);
  if (scopeRegion !== region || service !== 'secretsmanager') {
    return refuse('InvalidSignatureException', `scope ${scopeRegion}/${service}`);
  }
  const amzDate = header(req, 'x-amz-date') ?? '';
  const signedAt = Date.parse(
    amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, '$1-$2-$3T$4:$5:$6Z'),
  );
  if (!amzDate.startsWith(day ?? '') || !(Math.abs(now - signedAt) < MAX_SKEW_MS)) {
    return refuse('InvalidSignatureException', `x-amz-date ${amzDate}`);
  }
  const signed = signedList.split(';');
  const required = ['content-type', 'host', 'x-amz-date', 'x-amz-target'];
  if (sessionToken !== undefined) required.push('x-amz-security-token');
  const unsigned = required.filter((name) => !signed.includes(name));
  if (unsigned.length > 0) return refuse('InvalidSignatureException', `unsigned: ${unsigned.join(',')}`);
  if (header(req, 'x-amz-security-token') !== sessionToken) {
    return refuse('UnrecognizedClientException', 'wrong or missing session token', 403);
  }

  const canonicalRequest = [
    'POST',
    '/',
    '',
    ...signed.map((name) => `${name}:${(header(req, name) ?? '').trim().replace(/\s+/g, ' ')}`),
    '',
    signedList,
    createHash('sha256').update(body).digest('hex'),
  ].join('\n');
  const stringToSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    `${day}/${scopeRegion}/${service}/aws4_request`,
    createHash('sha256').update(canonicalRequest).digest('hex'),
  ].join('\n');
  let key = createHmac('sha256', `AWS4${SECRET_ACCESS_KEY}`)
    .update(day ?? '')
    .digest();
  for (const part of [scopeRegion, service, 'aws4_request'])
    key = createHmac('sha256', key).update(part).digest();
  const expected = createHmac('sha256', key).update(stringToSign).digest('hex');
  if (expected !== signature) return refuse('InvalidSignatureException', 'signature does not match');
  return undefined;
}
