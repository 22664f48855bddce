import { chatRepository } from './shared/chat-repository';
import { json, route, tenantOf } from './shared/http';

/** `DELETE /chats`: deletes every chat of the tenant (erasure); answers how many there were. */
export const handler = route(async (event) =>
  json(200, { deleted: await chatRepository.deleteAllChats(tenantOf(event)) }),
);
