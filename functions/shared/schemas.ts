import type { BodySchemaName } from '../routes';
import { type Limits, MODEL_CONTEXT_TOKENS } from './config';
import type { JsonSchema } from './validation';

/** The longest a turn may wait for a busy chat (`wait_ms`). */
export const MAX_WAIT_MS = 30_000;

/**
 * The request bodies of the API, as JSON Schema. Built from the deployment's limits and model
 * allow-list, so the documented and the enforced values are the same.
 */
export function requestSchemas(limits: Limits, models: readonly string[]) {
  const content = {
    type: 'string',
    minLength: 1,
    maxLength: limits.maxContentChars,
    description: 'A message, prompt or text to check',
  } as const satisfies JsonSchema;

  const stream = {
    type: 'boolean',
    description: 'Stream the reply as Server-Sent Events (as does an Accept: text/event-stream header)',
  } as const satisfies JsonSchema;

  const waitMs = {
    type: 'integer',
    minimum: 0,
    maximum: MAX_WAIT_MS,
    description: 'When another turn is running on the chat, wait up to this long for it instead of a 409',
  } as const satisfies JsonSchema;

  return {
    /** `POST /system`, `POST /{chat_id}/system`, `POST /mod`. */
    content: {
      type: 'object',
      required: ['content'],
      properties: { content },
    },
    /** `POST /{chat_id}/chat`. */
    chat: {
      type: 'object',
      required: ['content'],
      properties: { content, stream, wait_ms: waitMs },
    },
    /** `POST /{chat_id}/img`. */
    image: {
      type: 'object',
      required: ['content', 'url'],
      properties: {
        content,
        stream,
        wait_ms: waitMs,
        url: {
          type: 'string',
          minLength: 1,
          maxLength: limits.maxUrlChars,
          format: 'uri',
          description: 'An http(s) URL of the image',
        },
      },
    },
    /** `POST /{chat_id}/settings`: each field set to a value, or to null to unset it. */
    settings: {
      type: 'object',
      additionalProperties: false,
      properties: {
        model: {
          type: 'string',
          enum: models,
          nullable: true,
          description: 'A model from the deployment allow-list',
        },
        temperature: {
          type: 'number',
          minimum: 0,
          maximum: 2,
          nullable: true,
          description: 'Sampling temperature',
        },
        max_tokens: {
          type: 'integer',
          minimum: 1,
          maximum: 1_000_000,
          nullable: true,
          description: 'Most tokens of a reply; also the room kept for it in the context',
        },
        max_context_tokens: {
          type: 'integer',
          minimum: 100,
          maximum: Math.max(...Object.values(MODEL_CONTEXT_TOKENS)),
          nullable: true,
          description: 'Token budget of the prompt: system prompts, history and the new message',
        },
        ttl_days: {
          type: 'integer',
          minimum: 1,
          maximum: 3650,
          nullable: true,
          description: 'Days the chat is kept after its last write',
        },
      },
    },
  } as const satisfies Record<BodySchemaName, JsonSchema>;
}
