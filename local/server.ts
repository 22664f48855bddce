import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { type RouteDefinition, routes } from '../functions/routes';
import { loadCorsConfig } from '../functions/shared/config';
import {
  type ChatProxyError,
  ForbiddenError,
  InternalError,
  MethodNotAllowedError,
  NotFoundError,
  PayloadTooLargeError,
} from '../functions/shared/errors';
import type { StreamingHandler } from '../functions/shared/lambda-stream';
import { apiGatewayEvent } from './api-event';
import { createResponseStream, installAwsLambda, isStreamingHandler } from './awslambda';

/** A buffered handler, answering once with status, headers and body. */
export type BufferedHandler = (
  event: APIGatewayProxyEvent,
  context: Context,
) => Promise<APIGatewayProxyResult>;

/** What a handler module under `functions/` exports: buffered, or wrapped by `streamifyResponse`. */
export type LocalHandler = BufferedHandler | StreamingHandler;

export interface LocalServerOptions {
  /** API key value → API key id (the tenant), as API Gateway's usage plan would know them. */
  readonly apiKeys: ReadonlyMap<string, string>;
  /**
   * Loads a route's handler.
   * @default a dynamic import of `functions/<entry>.ts`
   */
  readonly loadHandler?: (route: RouteDefinition) => Promise<LocalHandler>;
  /** No per-request log line. @default false */
  readonly quiet?: boolean;
  /**
   * Browser origins whose CORS preflights are answered, as API Gateway does when deployed with
   * `corsOrigins` (the functions add the headers to the answers themselves).
   * @default CORS_ALLOWED_ORIGINS
   */
  readonly corsOrigins?: readonly string[];
}

/** API Gateway's own payload limit; the handlers enforce their smaller, configured one. */
export const MAX_REQUEST_BYTES = 10 * 1024 * 1024;

async function importHandler(route: RouteDefinition): Promise<LocalHandler> {
  // Streaming handlers call `awslambda.streamifyResponse` as their module loads.
  installAwsLambda();
  // Imported on first use rather than at start-up: each handler reads its config at import time,
  // which must happen after dev.ts has filled in the environment.
  const module = (await import(`../functions/${route.entry}.ts`)) as { handler: LocalHandler };
  return module.handler;
}

interface Match {
  readonly route: RouteDefinition;
  readonly pathParameters: Record<string, string> | null;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    // Left as sent; the handler's validation rejects it like any other bad id.
    return segment;
  }
}

/** A route's path template, split once: literal segments, and `{name}` parameters. */
interface CompiledRoute {
  readonly route: RouteDefinition;
  readonly segments: ReadonlyArray<{ readonly literal: string } | { readonly parameter: string }>;
}

function compile(route: RouteDefinition): CompiledRoute {
  const segments = route.path.split('/').map((part) => {
    const name = /^\{(\w+)\}$/.exec(part)?.[1];
    return name === undefined ? { literal: part } : { parameter: name };
  });
  return { route, segments };
}

function matchPath(
  compiled: CompiledRoute,
  actual: readonly string[],
): Record<string, string> | null | undefined {
  const { segments } = compiled;
  if (segments.length !== actual.length) return undefined;
  let parameters: Record<string, string> | null = null;
  for (let index = 0; index < segments.length; index += 1) {
    const expected = segments[index] as CompiledRoute['segments'][number];
    const segment = actual[index] ?? '';
    if ('literal' in expected) {
      if (expected.literal !== segment) return undefined;
    } else {
      if (segment === '') return undefined;
      parameters ??= {};
      parameters[expected.parameter] = decodeSegment(segment);
    }
  }
  return parameters;
}

/** Literal segments win over path parameters, as in API Gateway. */
function literalCount(route: RouteDefinition): number {
  return route.path.split('/').filter((part) => !part.startsWith('{')).length;
}

const byLiteralsFirst = [...routes].sort((a, b) => literalCount(b) - literalCount(a)).map(compile);

function findRoutes(path: string): Match[] {
  const actual = path.split('/');
  const matches: Match[] = [];
  for (const compiled of byLiteralsFirst) {
    const pathParameters = matchPath(compiled, actual);
    if (pathParameters !== undefined) matches.push({ route: compiled.route, pathParameters });
  }
  return matches;
}

/** A CORS preflight, answered without a key or a function, as API Gateway answers it. */
function answerPreflight(
  req: IncomingMessage,
  res: ServerResponse,
  origins: readonly string[],
  matches: Match[],
): void {
  const origin = req.headers.origin;
  const allowed = origins.includes('*')
    ? '*'
    : origin !== undefined && origins.includes(origin)
      ? origin
      : undefined;
  res.writeHead(204, {
    ...(allowed ? { 'Access-Control-Allow-Origin': allowed } : {}),
    'Access-Control-Allow-Methods': [
      ...new Set([...matches.map((match) => match.route.method), 'OPTIONS']),
    ].join(', '),
    'Access-Control-Allow-Headers': 'Content-Type, x-api-key, Idempotency-Key, Accept',
    'Access-Control-Max-Age': '600',
    Vary: 'Origin',
  });
  res.end();
}

/** Answers one of the functions' own error classes, as API Gateway answers its errors before a function runs. */
function sendError(res: ServerResponse, error: ChatProxyError): void {
  res.writeHead(error.status, { 'content-type': 'application/json; charset=utf-8', ...error.headers });
  res.end(JSON.stringify({ error: { code: error.code, message: error.message } }));
}

class BodyTooLargeError extends Error {}

/** Reads the body, giving up once it is over the cap (the rest is never buffered). */
function readBody(req: IncomingMessage): Promise<Buffer> {
  if (Number(req.headers['content-length']) > MAX_REQUEST_BYTES)
    return Promise.reject(new BodyTooLargeError());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_REQUEST_BYTES) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      req.off('end', onEnd);
      reject(new BodyTooLargeError());
    };
    const onEnd = () => resolve(Buffer.concat(chunks));
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', reject);
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** API Gateway passes text bodies as they are and anything else base64-encoded. */
function eventBody(bytes: Buffer): { body: string | null; isBase64Encoded: boolean } {
  if (bytes.length === 0) return { body: null, isBase64Encoded: false };
  try {
    return { body: utf8.decode(bytes), isBase64Encoded: false };
  } catch {
    return { body: bytes.toString('base64'), isBase64Encoded: true };
  }
}

function singleValued(values: NodeJS.Dict<string | string[]>): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(values)) {
    if (value !== undefined) result[name] = Array.isArray(value) ? value.join(',') : value;
  }
  return result;
}

function queryParameters(search: URLSearchParams): Record<string, string> | null {
  const entries = [...search.entries()];
  return entries.length === 0 ? null : Object.fromEntries(entries);
}

function lambdaContext(route: RouteDefinition, requestId: string): Context {
  const functionName = `chat-proxy-local-${route.id}`;
  const deadline = Date.now() + 29_000;
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${functionName}`,
    memoryLimitInMB: '256',
    awsRequestId: requestId,
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

function writeResult(res: ServerResponse, result: APIGatewayProxyResult): void {
  const headers: Record<string, string | string[]> = {};
  for (const [name, values] of Object.entries(result.multiValueHeaders ?? {})) {
    headers[name.toLowerCase()] = values.map(String);
  }
  for (const [name, value] of Object.entries(result.headers ?? {})) {
    headers[name.toLowerCase()] = String(value);
  }
  const body = result.isBase64Encoded ? Buffer.from(result.body, 'base64') : result.body;
  res.writeHead(result.statusCode, headers);
  res.end(body);
}

/** Streams a response-streaming handler's output to the client as API Gateway would. */
async function streamResult(
  res: ServerResponse,
  handler: StreamingHandler,
  event: APIGatewayProxyEvent,
  context: Context,
): Promise<void> {
  // What the handler writes in one go (the head, a JSON body and the end) leaves in one packet:
  // the chunks of a tick are gathered and written together on the next, or with the end. (Not
  // res.cork(): once the head has gone out, Node 24's end() on a corked response writes the
  // closing chunk before what the cork held, and the client loses the tail of the body.) An event
  // stream's head is sent at once, so the client sees the stream open.
  let pending: Buffer[] = [];
  const flush = () => {
    if (pending.length === 0 || res.destroyed || res.writableEnded) return;
    const data = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending);
    pending = [];
    res.write(data);
  };
  const stream = createResponseStream({
    head: ({ statusCode, headers = {}, cookies = [] }) => {
      const lowerCased = Object.fromEntries(
        Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]),
      );
      res.writeHead(statusCode, cookies.length > 0 ? { ...lowerCased, 'set-cookie': cookies } : lowerCased);
      if (String(lowerCased['content-type']).startsWith('text/event-stream')) res.flushHeaders();
    },
    write: (chunk) => {
      if (res.destroyed) return;
      if (pending.length === 0) process.nextTick(flush);
      pending.push(chunk);
    },
    end: () => {
      const data = pending.length === 0 ? undefined : Buffer.concat(pending);
      pending = [];
      res.end(data);
    },
  });
  // A client that goes away closes the handler's stream, as in Lambda, so it can stop its work.
  res.once('close', () => {
    if (!res.writableFinished) stream.destroy();
  });
  await handler(event, stream, context);
  if (!stream.writableEnded && !stream.destroyed) stream.end();
}

/**
 * An HTTP server that serves the route table with the same handlers as the deployed stack,
 * calling them with API Gateway proxy events. It checks API keys as API Gateway does: a route that
 * requires one gets a 403 before its handler runs, and the handler only ever sees the key's id.
 */
export function createLocalServer(options: LocalServerOptions): Server {
  const loadHandler = options.loadHandler ?? importHandler;
  const handlers = new Map<string, Promise<LocalHandler>>();

  const handlerFor = (route: RouteDefinition): Promise<LocalHandler> => {
    let loading = handlers.get(route.id);
    if (loading === undefined) {
      loading = loadHandler(route);
      handlers.set(route.id, loading);
      loading.catch(() => handlers.delete(route.id));
    }
    return loading;
  };

  const corsOrigins = options.corsOrigins ?? loadCorsConfig().allowedOrigins;

  const serve = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://local');
    const matches = findRoutes(url.pathname);
    if (matches.length === 0) {
      sendError(res, new NotFoundError(`No route for ${url.pathname}`));
      return;
    }
    if (method === 'OPTIONS' && corsOrigins.length > 0) {
      answerPreflight(req, res, corsOrigins, matches);
      return;
    }
    // As in API Gateway, the most specific resource is chosen first, then its method: DELETE
    // /system is a 405, not DELETE /{chat_id} with "system" as the chat id.
    const resource = matches.filter((candidate) => candidate.route.path === matches[0]?.route.path);
    const match = resource.find((candidate) => candidate.route.method === method);
    if (match === undefined) {
      const allow = [...new Set(resource.map((candidate) => candidate.route.method))];
      sendError(res, new MethodNotAllowedError(`${method} is not allowed on ${url.pathname}`, allow));
      return;
    }
    const { route } = match;

    const apiKey = req.headers['x-api-key'];
    const apiKeyId = typeof apiKey === 'string' ? options.apiKeys.get(apiKey) : undefined;
    if (route.apiKeyRequired && apiKeyId === undefined) {
      sendError(res, new ForbiddenError());
      return;
    }

    let bytes: Buffer;
    try {
      bytes = await readBody(req);
    } catch (error) {
      if (!(error instanceof BodyTooLargeError)) throw error;
      // Answer at once, and let the rest of the body flow to nowhere: closing the connection
      // instead would make most clients fail with EPIPE before they read the 413.
      req.resume();
      sendError(res, new PayloadTooLargeError(MAX_REQUEST_BYTES));
      return;
    }

    const requestId = randomUUID();
    const event = apiGatewayEvent({
      method,
      resource: route.path,
      path: url.pathname,
      pathParameters: match.pathParameters,
      queryStringParameters: queryParameters(url.searchParams),
      headers: singleValued(req.headers),
      ...eventBody(bytes),
      apiKeyId: route.apiKeyRequired ? apiKeyId : null,
      sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
    });
    const handler = await handlerFor(route);
    const context = lambdaContext(route, requestId);
    if (isStreamingHandler(handler)) await streamResult(res, handler, event, context);
    else writeResult(res, await handler(event, context));
  };

  return createServer((req, res) => {
    const started = performance.now();
    if (!options.quiet) {
      res.once('finish', () => {
        const ms = (performance.now() - started).toFixed(1);
        const path = (req.url ?? '/').split('?')[0];
        console.log(`${req.method} ${path} ${res.statusCode} ${ms}ms`);
      });
    }
    serve(req, res).catch((error: unknown) => {
      console.error(`Handler failed on ${req.method} ${req.url}:`, error);
      if (res.headersSent) {
        // The answer had started: it ends there, cut short (no final chunk), as a failed stream
        // does in Lambda. Not at once, as what went out last is still corked until the next tick,
        // and by ending the socket, which sends what it still holds before it closes.
        setImmediate(() => (res.socket ? res.socket.end() : res.destroy()));
        return;
      }
      sendError(res, new InternalError());
    });
  });
}
