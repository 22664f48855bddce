import { chatRepository } from './shared/chat-repository';
import { settingsView } from './shared/chat-views';
import { chatOf, json, route } from './shared/http';

/** `GET /{chat_id}/settings`: the chat's settings, null where the deployment's value applies. */
export const handler = route(async (event) =>
  json(200, settingsView(await chatRepository.getSettings(chatOf(event)))),
);
