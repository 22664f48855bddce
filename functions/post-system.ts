import { chatRepository } from './shared/chat-repository';
import { json, parseBody, route, schemas, tenantOf } from './shared/http';
import { idempotentResult } from './shared/idempotency';

/** `POST /system`: sets the tenant's global system prompt, the base of every chat's prompt. */
export const handler = route(async (event) => {
  const tenant = tenantOf(event);
  const { content } = parseBody(event, schemas.content);
  return idempotentResult(event, { tenant }, async () => {
    await chatRepository.setGlobalSystemPrompt(tenant, content);
    return json(200, {});
  });
});
