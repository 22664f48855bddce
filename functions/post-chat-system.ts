import { chatRepository } from './shared/chat-repository';
import { chatOf, json, parseBody, route, schemas } from './shared/http';
import { idempotentResult } from './shared/idempotency';

/**
 * `POST /{chat_id}/system`: sets the chat's own system prompt (after the global one). A request
 * with an Idempotency-Key keeps its answer in the same write as the prompt, so a retry after a
 * lost reply replays it instead of setting the prompt again over a later change.
 */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  const { content } = parseBody(event, schemas.content);
  return idempotentResult(event, chat, async (record) => {
    const answer = json(200, {});
    await chatRepository.setChatSystemPrompt(chat, content, record?.keeping(answer));
    record?.keptInWrite();
    return answer;
  });
});
