import { json, parseBody, route, schemas, tenantOf } from './shared/http';
import { moderate } from './shared/openai';

/** `POST /mod`: OpenAI moderation of a text, answered as OpenAI gives it. */
export const handler = route(async (event) => {
  tenantOf(event);
  const { content } = parseBody(event, schemas.content);
  return json(200, await moderate(content));
});
