import { createHash } from 'node:crypto';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { reservedChatIds } from '../routes';
import type { ChatRef } from './chat-repository';
import { isSamLocal, loadChatConfig, loadCorsConfig, loadLimits } from './config';
import {
  ChatProxyError,
  ForbiddenError,
  InternalError,
  PayloadTooLargeError,
  ValidationError,
} from './errors';
import { annotate, logger, observe } from './observability';
import { requestSchemas } from './schemas';
import { type Infer, type JsonSchema, validate } from './validation';

const samLocal = isSamLocal();
const { allowedOrigins } = loadCorsConfig();

/** The deployment's request limits, read once per container. */
export const limits = loadLimits();

/** The request body schemas, sized by `limits`. */
export const schemas = requestSchemas(limits, loadChatConfig().models);

export type ApiEvent = APIGatewayProxyEvent;
export type ApiResult = APIGatewayProxyResult;

const JSON_HEADERS = { 'Content-Type': 'application/json; charset=utf-8' } as const;

/** A JSON answer; its headers are plain strings, so it can be kept for idempotent replay as is. */
export interface JsonResult extends ApiResult {
  readonly headers: Record<string, string>;
}

export function json(statusCode: number, body: unknown, headers: Record<string, string> = {}): JsonResult {
  return { statusCode, headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) };
}

/** The JSON body of an error: `{"error":{"code","message"}}`. */
export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

/** The one mapping from an error to a status, headers and body. Anything unexpected is a 500 with no detail. */
export function describeError(error: unknown): {
  status: number;
  headers: Record<string, string>;
  body: ErrorBody;
} {
  if (error instanceof ChatProxyError) {
    annotate({ error_code: error.code });
    return {
      status: error.status,
      headers: { ...error.headers },
      body: { error: { code: error.code, message: error.message } },
    };
  }
  logger.error('Unhandled error', error as Error);
  return describeError(new InternalError());
}

export function errorResponse(error: unknown): ApiResult {
  const { status, headers, body } = describeError(error);
  return json(status, body, headers);
}

/** Wraps a route's logic so every thrown error becomes the right JSON response. */
export function route(
  logic: (event: ApiEvent) => Promise<ApiResult>,
): (event: ApiEvent, context?: Context) => Promise<ApiResult> {
  return (event, context) =>
    observe(
      event,
      context,
      async () => {
        let result: ApiResult;
        try {
          result = await logic(event);
        } catch (error) {
          result = errorResponse(error);
        }
        const cors = corsHeaders(event);
        return cors ? { ...result, headers: { ...result.headers, ...cors } } : result;
      },
      (result) => result.statusCode,
    );
}

/**
 * The CORS headers for a browser request from an allowed origin (CORS_ALLOWED_ORIGINS), or
 * undefined. API Gateway answers the preflight; the functions must mark every actual answer.
 */
export function corsHeaders(event: ApiEvent): Record<string, string> | undefined {
  if (allowedOrigins.length === 0) return undefined;
  // Without this, a browser app could not read the paging cursors or the replay marker.
  const expose = { 'Access-Control-Expose-Headers': 'Link, Idempotent-Replayed, Retry-After' };
  if (allowedOrigins.includes('*')) return { 'Access-Control-Allow-Origin': '*', ...expose };
  const origin = header(event, 'origin');
  if (origin === undefined || !allowedOrigins.includes(origin)) return { Vary: 'Origin' };
  return { 'Access-Control-Allow-Origin': origin, Vary: 'Origin', ...expose };
}

/** A request header, whatever its case. */
export function header(event: ApiEvent, name: string): string | undefined {
  const lower = name.toLowerCase();
  return Object.entries(event.headers ?? {}).find(([key]) => key.toLowerCase() === lower)?.[1];
}

const ID = /^[A-Za-z0-9_-]+$/;

/**
 * The tenant is the API key's id, which API Gateway puts in the request context once it has
 * checked the key (the local server does the same). The key itself is never used or stored.
 */
export function tenantOf(event: ApiEvent): string {
  const tenant = samLocal ? samLocalTenant(event) : event.requestContext?.identity?.apiKeyId;
  if (typeof tenant !== 'string' || tenant.length > 128 || !ID.test(tenant)) throw new ForbiddenError();
  annotate({ tenant });
  return tenant;
}

function samLocalTenant(event: ApiEvent): string | undefined {
  const key = header(event, 'x-api-key');
  return key ? `sam-local-${createHash('sha256').update(key).digest('hex').slice(0, 16)}` : undefined;
}

/** The chat a request is about: the caller's tenant and the `chat_id` path parameter. */
export function chatOf(event: ApiEvent): ChatRef {
  return { tenant: tenantOf(event), chatId: chatIdOf(event) };
}

/** The `chat_id` path parameter, checked so it can only ever name one chat of one tenant. */
export function chatIdOf(event: ApiEvent): string {
  const chatId = event.pathParameters?.chat_id;
  if (chatId === undefined || chatId === '') {
    throw new ValidationError('invalid_chat_id', 'A chat id is required');
  }
  if (chatId.length > limits.maxChatIdLength || !ID.test(chatId)) {
    throw new ValidationError(
      'invalid_chat_id',
      `A chat id is 1 to ${limits.maxChatIdLength} characters of A-Z, a-z, 0-9, "_" and "-"`,
    );
  }
  if (reservedChatIds.has(chatId)) {
    throw new ValidationError('invalid_chat_id', `"${chatId}" is a reserved word and cannot be a chat id`);
  }
  annotate({ chat_id: chatId });
  return chatId;
}

/** Decodes the body (API Gateway may base64 it), enforces the size limit, and parses the JSON. */
/** The body's bytes, as the client sent them (API Gateway may have base64-encoded them). */
export function rawBody(event: ApiEvent): Buffer {
  const raw = event.body ?? '';
  return event.isBase64Encoded ? Buffer.from(raw, 'base64') : Buffer.from(raw, 'utf8');
}

export function parseJson(event: ApiEvent): unknown {
  const bytes = rawBody(event);
  if (bytes.length > limits.maxBodyBytes) throw new PayloadTooLargeError(limits.maxBodyBytes);
  const text = bytes.toString('utf8');
  if (text.trim() === '') throw new ValidationError('invalid_body', 'A JSON body is required');
  try {
    return JSON.parse(text);
  } catch {
    throw new ValidationError('invalid_body', 'The request body is not valid JSON');
  }
}

/** Parses and validates a JSON body against one of the request schemas. */
export function parseBody<S extends Extract<JsonSchema, { type: 'object' }>>(
  event: ApiEvent,
  schema: S,
): Infer<S> {
  return validate(schema, parseJson(event));
}

/** Whether the client asked for a streamed reply: `"stream": true`, or `Accept: text/event-stream`. */
export function wantsStream(event: ApiEvent, stream: boolean | undefined): boolean {
  if (stream !== undefined) return stream;
  const accept = header(event, 'accept');
  return accept?.includes('text/event-stream') ?? false;
}

/**
 * A whole-number query parameter within bounds, or undefined when absent. Anything else is a 400
 * naming the parameter.
 */
export function integerQuery(event: ApiEvent, name: string, min: number, max: number): number | undefined {
  const raw = event.queryStringParameters?.[name];
  if (raw === undefined || raw === null) return undefined;
  const value = /^\d{1,16}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new ValidationError('invalid_query', `${name} must be a whole number from ${min} to ${max}`);
  }
  return value;
}

/** A Link header with the given relations, each a query on the same path (RFC 8288). */
export function linkHeader(
  links: Record<string, Record<string, string | number> | undefined>,
): Record<string, string> {
  const parts = Object.entries(links)
    .filter((entry): entry is [string, Record<string, string | number>] => entry[1] !== undefined)
    .map(([rel, query]) => {
      const search = new URLSearchParams(
        Object.entries(query).map(([k, v]): [string, string] => [k, String(v)]),
      );
      return `<?${search}>; rel="${rel}"`;
    });
  return parts.length === 0 ? {} : { Link: parts.join(', ') };
}

/** Milliseconds since the epoch as an ISO 8601 date. */
export function isoDate(ms: number): string {
  return new Date(ms).toISOString();
}
