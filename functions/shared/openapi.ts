import {
  type QueryParameterName,
  type ResponseSchemaName,
  type RouteDefinition,
  reservedChatIds,
} from '../routes';
import type { Limits } from './config';
import { MAX_WAIT_MS, requestSchemas } from './schemas';
import type { JsonSchema } from './validation';

/**
 * The OpenAPI 3.1 document of the API, generated from the route table and the same request
 * schemas the handlers validate with, so it cannot drift from what the service does.
 */

type Schema = Record<string, unknown>;

/** Our JSON Schema subset in OpenAPI 3.1 (JSON Schema 2020-12) form: `nullable` becomes a type list. */
function toOpenApi(schema: JsonSchema): Schema {
  const { nullable, ...rest } = schema;
  const converted: Schema = { ...rest };
  if (schema.type === 'object') {
    converted.properties = Object.fromEntries(
      Object.entries(schema.properties).map(([name, property]) => [name, toOpenApi(property)]),
    );
  }
  if (nullable) converted.type = [schema.type, 'null'];
  return converted;
}

const integer = { type: 'integer', minimum: 0 } as const;
const tokens = {
  type: 'object',
  required: ['completion_tokens', 'prompt_tokens', 'total_tokens'],
  properties: { completion_tokens: integer, prompt_tokens: integer, total_tokens: integer },
} as const;
const usage = {
  type: 'object',
  required: ['prompt_tokens', 'completion_tokens', 'total_tokens', 'turns'],
  properties: { prompt_tokens: integer, completion_tokens: integer, total_tokens: integer, turns: integer },
} as const;
const date = { type: 'string', format: 'date-time' } as const;
const nullableString = { type: ['string', 'null'] } as const;
const chatSummary = {
  type: 'object',
  required: ['id', 'created_at', 'updated_at', 'message_count'],
  properties: { id: { type: 'string' }, created_at: date, updated_at: date, message_count: integer },
} as const;
const settings = {
  type: 'object',
  required: ['model', 'temperature', 'max_tokens', 'max_context_tokens', 'ttl_days'],
  description: 'Every setting of the chat; null where the deployment default applies',
  properties: {
    model: nullableString,
    temperature: { type: ['number', 'null'] },
    max_tokens: { type: ['integer', 'null'] },
    max_context_tokens: { type: ['integer', 'null'] },
    ttl_days: { type: ['integer', 'null'] },
  },
} as const;
const contentParts = {
  type: 'array',
  description: 'An image turn: a text part and an image_url part, as OpenAI takes them',
  items: {
    type: 'object',
    required: ['type'],
    properties: {
      type: { enum: ['text', 'image_url'] },
      text: { type: 'string' },
      image_url: { type: 'object', required: ['url'], properties: { url: { type: 'string' } } },
    },
  },
} as const;

const responseSchemas: Record<Exclude<ResponseSchemaName, 'html'>, Schema> = {
  empty: { type: 'object', maxProperties: 0 },
  systemPrompt: { type: 'object', required: ['content'], properties: { content: nullableString } },
  moderation: {
    type: 'object',
    required: ['id', 'model', 'results'],
    description: "OpenAI's moderation answer, as OpenAI gives it",
    properties: {
      id: { type: 'string' },
      model: { type: 'string' },
      results: { type: 'array', items: { type: 'object' } },
    },
  },
  turn: {
    type: 'object',
    required: ['content', 'role', 'tokens'],
    properties: { content: { type: 'string' }, role: { const: 'assistant' }, tokens },
  },
  messages: {
    type: 'array',
    description: 'Messages oldest first',
    items: {
      type: 'object',
      required: ['id', 'role', 'content', 'created_at'],
      properties: {
        id: integer,
        role: { enum: ['user', 'assistant'] },
        content: { oneOf: [{ type: 'string' }, contentParts] },
        created_at: date,
      },
    },
  },
  chatInfo: {
    type: 'object',
    required: [...chatSummary.required, 'usage', 'settings'],
    properties: { ...chatSummary.properties, usage, settings },
  },
  settings,
  chatList: {
    type: 'object',
    required: ['chats', 'next_cursor'],
    properties: { chats: { type: 'array', items: chatSummary }, next_cursor: nullableString },
  },
  deleted: { type: 'object', required: ['deleted'], properties: { deleted: integer } },
  usage,
  openapi: { type: 'object', description: 'This document' },
};

const queryParameters: Record<QueryParameterName, Schema> = {
  limit: {
    name: 'limit',
    description: 'Page size (default: the newest page under the size limit)',
    schema: { type: 'integer', minimum: 1, maximum: 1000 },
  },
  before: { name: 'before', description: 'Messages older than this message id', schema: integer },
  after: { name: 'after', description: 'Messages newer than this message id', schema: integer },
  cursor: { name: 'cursor', description: 'next_cursor of the previous page', schema: { type: 'string' } },
};

const errorResponse = { $ref: '#/components/responses/Error' };

function operation(
  route: RouteDefinition,
  limits: Limits,
  bodies: ReturnType<typeof requestSchemas>,
  idempotencyTtlSeconds: number,
): Schema {
  const parameters: Schema[] = [];
  if (route.path.includes('{chat_id}')) {
    parameters.push({
      name: 'chat_id',
      in: 'path',
      required: true,
      description: `Any id of your choosing; the reserved words ${[...reservedChatIds].join(', ')} are refused`,
      schema: { type: 'string', pattern: `^[A-Za-z0-9_-]{1,${limits.maxChatIdLength}}$` },
    });
  }
  for (const name of route.query ?? [])
    parameters.push({ in: 'query', required: false, ...queryParameters[name] });
  if (route.method === 'POST') {
    parameters.push({
      name: 'Idempotency-Key',
      in: 'header',
      required: false,
      description: `Repeats within ${idempotencyTtlSeconds} s get the first answer again, without running twice`,
      schema: { type: 'string', minLength: 1, maxLength: 255 },
    });
  }

  const success: Schema =
    route.response === 'html'
      ? {
          description: 'Healthy',
          content: { 'text/html': { schema: { type: 'string', const: 'Hello, World!' } } },
        }
      : {
          description: 'OK',
          content: {
            'application/json': { schema: { $ref: `#/components/schemas/${route.response}` } },
            ...(route.streaming
              ? {
                  'text/event-stream': {
                    schema: {
                      type: 'string',
                      description:
                        'With "stream": true or Accept: text/event-stream: `delta` events ({"content"}), then `done` (the same object as the JSON answer) or `error` ({"error":{"code","message"}})',
                    },
                  },
                }
              : {}),
          },
        };

  return {
    operationId: route.id.charAt(0).toLowerCase() + route.id.slice(1),
    summary: route.summary,
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(route.body
      ? {
          requestBody: {
            required: true,
            content: { 'application/json': { schema: toOpenApi(bodies[route.body]) } },
          },
        }
      : {}),
    responses: {
      200: success,
      ...(route.apiKeyRequired || route.body ? { '4XX': errorResponse } : {}),
      '5XX': errorResponse,
    },
    security: route.apiKeyRequired ? [{ apiKey: [] }] : [],
  };
}

export interface OpenApiOptions {
  readonly limits: Limits;
  readonly idempotencyTtlSeconds: number;
  readonly models: readonly string[];
  readonly version: string;
}

/** The OpenAPI 3.1 document for these routes. */
export function openApiDocument(routes: readonly RouteDefinition[], options: OpenApiOptions): Schema {
  const bodies = requestSchemas(options.limits, options.models);
  const paths: Record<string, Record<string, Schema>> = {};
  for (const route of routes) {
    paths[route.path] ??= {};
    (paths[route.path] as Record<string, Schema>)[route.method.toLowerCase()] = operation(
      route,
      options.limits,
      bodies,
      options.idempotencyTtlSeconds,
    );
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Chat proxy',
      version: options.version,
      description: `Keeps conversations with OpenAI's chat API in Redis. Each API key is a tenant. Limits: bodies up to ${options.limits.maxBodyBytes} bytes, content up to ${options.limits.maxContentChars} characters, wait_ms up to ${MAX_WAIT_MS}.`,
    },
    paths,
    components: {
      securitySchemes: { apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' } },
      schemas: {
        ...responseSchemas,
        Error: {
          type: 'object',
          required: ['error'],
          properties: {
            error: {
              type: 'object',
              required: ['code', 'message'],
              properties: { code: { type: 'string' }, message: { type: 'string' } },
            },
          },
        },
      },
      responses: {
        Error: {
          description: 'An error, with a stable code',
          content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
        },
      },
    },
  };
}
