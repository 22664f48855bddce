import { chatRepository } from './shared/chat-repository';
import { json, parseBody, route, schemas, tenantOf } from './shared/http';
import { idempotentResult } from './shared/idempotency';

/**
 * `POST /system`: sets the tenant's global system prompt, the base of every chat's prompt. A
 * request with an Idempotency-Key keeps its answer in the same write as the prompt, so a retry
 * after a lost reply replays it instead of setting the prompt again over a later change.
 */
export const handler = route(async (event) => {
  const tenant = tenantOf(event);
  const { content } = parseBody(event, schemas.content);
  return idempotentResult(event, { tenant }, async (record) => {
    const answer = json(200, {});
    await chatRepository.setGlobalSystemPrompt(tenant, content, record?.keeping(answer));
    record?.keptInWrite();
    return answer;
  });
});
