import { chatRepository } from './shared/chat-repository';
import { chatOf, json, route } from './shared/http';

/** `GET /{chat_id}/system`: the chat's own system prompt, or null. */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  return json(200, { content: await chatRepository.getChatSystemPrompt(chat) });
});
