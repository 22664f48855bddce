import type { BodySchemaName } from '../routes';
import type { Limits } from './config';
import type { JsonSchema } from './validation';

/**
 * The request bodies of the API, as JSON Schema. Built from the deployment's limits so the
 * documented and enforced limits are the same numbers.
 */
/** The longest a turn may wait for a busy chat (`wait_ms`). */
export const MAX_WAIT_MS = 30_000;

export function requestSchemas(limits: Limits) {
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
  } as const satisfies Record<BodySchemaName, JsonSchema>;
}
