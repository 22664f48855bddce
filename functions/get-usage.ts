import { chatRepository } from './shared/chat-repository';
import { json, route, tenantOf } from './shared/http';

/** `GET /usage`: the tenant's token totals over all its turns. */
export const handler = route(async (event) => json(200, await chatRepository.getUsage(tenantOf(event))));
