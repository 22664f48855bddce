import { chatRepository } from './shared/chat-repository';
import { chatOf, json, route } from './shared/http';

/** `GET /{chat_id}/chat`: the chat's messages, oldest first (an empty array for a new chat). */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  return json(200, await chatRepository.getMessages(chat));
});
