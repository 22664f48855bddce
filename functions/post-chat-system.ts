import { chatRepository } from './shared/chat-repository';
import { chatOf, json, parseBody, route, schemas } from './shared/http';
import { idempotentResult } from './shared/idempotency';

/** `POST /{chat_id}/system`: sets the chat's own system prompt (after the global one). */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  const { content } = parseBody(event, schemas.content);
  return idempotentResult(event, chat, async () => {
    await chatRepository.setChatSystemPrompt(chat, content);
    return json(200, {});
  });
});
