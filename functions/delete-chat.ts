import { chatRepository } from './shared/chat-repository';
import { ChatNotFoundError } from './shared/errors';
import { chatOf, json, route } from './shared/http';

/** `DELETE /{chat_id}`: deletes the chat with everything in it: messages, prompt, settings, usage. */
export const handler = route(async (event) => {
  if (!(await chatRepository.deleteChat(chatOf(event)))) throw new ChatNotFoundError();
  return json(200, {});
});
