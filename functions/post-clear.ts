import { chatRepository } from './shared/chat-repository';
import { chatOf, json, route } from './shared/http';
import { idempotentResult } from './shared/idempotency';

/**
 * `POST /{chat_id}/clear`: deletes the chat's messages; its system prompt stays. A request with an
 * Idempotency-Key keeps its answer in the same write as the clear, so a retry after a lost reply
 * replays it instead of clearing again what the chat gained since.
 */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  return idempotentResult(event, chat, async (record) => {
    const answer = json(200, {});
    await chatRepository.clearMessages(chat, record?.keeping(answer));
    record?.keptInWrite();
    return answer;
  });
});
