import { chatRepository } from './shared/chat-repository';
import { ValidationError } from './shared/errors';
import { chatOf, integerQuery, isoDate, json, linkHeader, route } from './shared/http';

/**
 * `GET /{chat_id}/chat`: the chat's messages, oldest first, one page at a time. With no cursor,
 * the newest page; `before`/`after` (message ids) page back and forth; the `Link` header carries
 * the cursors of the pages around this one (`next` continues in the direction of the request).
 */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  const limit = integerQuery(event, 'limit', 1, 1000);
  const before = integerQuery(event, 'before', 0, Number.MAX_SAFE_INTEGER);
  const after = integerQuery(event, 'after', 0, Number.MAX_SAFE_INTEGER);
  if (before !== undefined && after !== undefined) {
    throw new ValidationError('invalid_query', 'Give before or after, not both');
  }
  const page = await chatRepository.getMessages(chat, { limit, before, after });
  const size: Record<string, number> = limit === undefined ? {} : { limit };
  const older = page.before === undefined ? undefined : { before: page.before, ...size };
  const newer = page.after === undefined ? undefined : { after: page.after, ...size };
  const forward = after !== undefined;
  return json(
    200,
    page.messages.map(({ id, role, content, created_at }) => ({
      id,
      role,
      content,
      created_at: isoDate(created_at),
    })),
    linkHeader(forward ? { next: newer, prev: older } : { next: older, prev: newer }),
  );
});
