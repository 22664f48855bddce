import { chatOf, parseBody, schemas } from './shared/http';
import { streamingRoute } from './shared/streaming-route';
import { answerTurn } from './shared/turn-route';

/** `POST /{chat_id}/img`: a turn whose user message carries a prompt and an image URL. */
export const handler = streamingRoute(async (event, reply) => {
  const chat = chatOf(event);
  const body = parseBody(event, schemas.image);
  const content = [
    { type: 'text', text: body.content },
    { type: 'image_url', image_url: { url: body.url } },
  ] as const;
  await answerTurn(event, reply, chat, { role: 'user', content }, body);
});
