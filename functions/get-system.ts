import { chatRepository } from './shared/chat-repository';
import { json, route, tenantOf } from './shared/http';

/** `GET /system`: the tenant's global system prompt, or null. */
export const handler = route(async (event) => {
  const content = await chatRepository.getGlobalSystemPrompt(tenantOf(event));
  return json(200, { content });
});
