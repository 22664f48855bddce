import { chatRepository } from './shared/chat-repository';
import { chatOf, json, route } from './shared/http';

/** `POST /{chat_id}/clear`: deletes the chat's messages; its system prompt stays. */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  await chatRepository.clearMessages(chat);
  return json(200, {});
});
