import type { ChatMessage } from './shared/chat-repository';
import { chatOf, json, parseBody, schemas, wantsStream } from './shared/http';
import { streamingRoute } from './shared/streaming-route';
import { runTurn, streamTurn } from './shared/turn';

/** `POST /{chat_id}/img`: a turn whose user message carries a prompt and an image URL. */
export const handler = streamingRoute(async (event, reply) => {
  const chat = chatOf(event);
  const { content, url, stream } = parseBody(event, schemas.image);
  const user: ChatMessage = {
    role: 'user',
    content: [
      { type: 'text', text: content },
      { type: 'image_url', image_url: { url } },
    ],
  };
  if (wantsStream(event, stream)) {
    await streamTurn(chat, user, () => reply.events(), reply.signal);
  } else {
    reply.send(json(200, await runTurn(chat, user)));
  }
});
