import { chatOf, parseBody, schemas } from './shared/http';
import { streamingRoute } from './shared/streaming-route';
import { answerTurn } from './shared/turn-route';

/** `POST /{chat_id}/chat`: one turn of the conversation, answered whole or streamed as events. */
export const handler = streamingRoute(async (event, reply) => {
  const chat = chatOf(event);
  const body = parseBody(event, schemas.chat);
  await answerTurn(event, reply, chat, { role: 'user', content: body.content }, body);
});
