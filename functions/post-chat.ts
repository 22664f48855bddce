import { chatOf, json, parseBody, schemas, wantsStream } from './shared/http';
import { streamingRoute } from './shared/streaming-route';
import { runTurn, streamTurn } from './shared/turn';

/** `POST /{chat_id}/chat`: one turn of the conversation, answered whole or streamed as events. */
export const handler = streamingRoute(async (event, reply) => {
  const chat = chatOf(event);
  const { content, stream } = parseBody(event, schemas.chat);
  const user = { role: 'user', content } as const;
  if (wantsStream(event, stream)) {
    await streamTurn(chat, user, () => reply.events(), reply.signal);
  } else {
    reply.send(json(200, await runTurn(chat, user)));
  }
});
