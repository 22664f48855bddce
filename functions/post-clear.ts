import { chatRepository } from './shared/chat-repository';
import { chatOf, json, route } from './shared/http';
import { idempotentResult } from './shared/idempotency';

/** `POST /{chat_id}/clear`: deletes the chat's messages; its system prompt stays. */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  return idempotentResult(event, chat, async () => {
    await chatRepository.clearMessages(chat);
    return json(200, {});
  });
});
