import { chatOf, json, parseBody, route, schemas } from './shared/http';
import { runTurn } from './shared/turn';

/** `POST /{chat_id}/img`: a turn whose user message carries a prompt and an image URL. */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  const { content, url } = parseBody(event, schemas.image);
  return json(
    200,
    await runTurn(chat, {
      role: 'user',
      content: [
        { type: 'text', text: content },
        { type: 'image_url', image_url: { url } },
      ],
    }),
  );
});
