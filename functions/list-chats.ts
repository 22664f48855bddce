import { chatRepository } from './shared/chat-repository';
import { summaryView } from './shared/chat-views';
import { ValidationError } from './shared/errors';
import { integerQuery, json, linkHeader, route, tenantOf } from './shared/http';

const CURSOR = /^\d{1,16}:[A-Za-z0-9_-]{1,512}$/;

/** `GET /chats`: the tenant's chats, most recently updated first, a page at a time. */
export const handler = route(async (event) => {
  const tenant = tenantOf(event);
  const limit = integerQuery(event, 'limit', 1, 1000) ?? 100;
  const cursor = event.queryStringParameters?.cursor ?? undefined;
  if (cursor !== undefined && !CURSOR.test(cursor)) {
    throw new ValidationError('invalid_query', 'cursor must be a next_cursor from an earlier page');
  }
  const page = await chatRepository.listChats(tenant, limit, cursor);
  return json(
    200,
    { chats: page.chats.map(summaryView), next_cursor: page.next ?? null },
    linkHeader({ next: page.next === undefined ? undefined : { cursor: page.next, limit } }),
  );
});
