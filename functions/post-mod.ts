import { json, parseBody, route, schemas, tenantOf } from './shared/http';
import { idempotentResult } from './shared/idempotency';
import { moderate } from './shared/openai';

/** `POST /mod`: OpenAI moderation of a text, answered as OpenAI gives it. */
export const handler = route(async (event) => {
  const tenant = tenantOf(event);
  const { content } = parseBody(event, schemas.content);
  return idempotentResult(event, { tenant }, async () => json(200, await moderate(content)));
});
