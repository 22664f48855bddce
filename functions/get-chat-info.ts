import { chatRepository } from './shared/chat-repository';
import { infoView } from './shared/chat-views';
import { ChatNotFoundError } from './shared/errors';
import { chatOf, json, route } from './shared/http';

/** `GET /{chat_id}`: the chat's dates, message count, token usage and settings. */
export const handler = route(async (event) => {
  const info = await chatRepository.getChatInfo(chatOf(event));
  if (info === null) throw new ChatNotFoundError();
  return json(200, infoView(info));
});
