import { chatOf, json, parseBody, route, schemas } from './shared/http';
import { runTurn } from './shared/turn';

/** `POST /{chat_id}/chat`: one turn of the conversation. */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  const { content } = parseBody(event, schemas.content);
  return json(200, await runTurn(chat, { role: 'user', content }));
});
