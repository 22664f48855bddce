import { type ChatSettings, chatRepository, type SettingsChange } from './shared/chat-repository';
import { settingsView } from './shared/chat-views';
import { loadChatConfig, MODEL_CONTEXT_TOKENS } from './shared/config';
import { ValidationError } from './shared/errors';
import { chatOf, json, parseBody, route, schemas } from './shared/http';
import { idempotentResult } from './shared/idempotency';

const { defaultModel } = loadChatConfig();

/** The value a setting has after the change: the change's, unset by null, else the current one. */
function after<K extends keyof ChatSettings>(key: K, change: SettingsChange, current: ChatSettings) {
  return change[key] === undefined ? current[key] : (change[key] ?? undefined);
}

/** `POST /{chat_id}/settings`: changes the given settings (null unsets one) and answers them all. */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  const change = parseBody(event, schemas.settings);
  if (change.model !== undefined || change.max_context_tokens !== undefined) {
    // The budget must fit the model the chat will use, whichever of the two this request changes.
    const current = await chatRepository.getSettings(chat);
    const model = after('model', change, current) ?? defaultModel;
    const budget = after('max_context_tokens', change, current);
    const context = MODEL_CONTEXT_TOKENS[model];
    if (context !== undefined && budget !== undefined && budget > context) {
      throw new ValidationError('invalid_body', `max_context_tokens must be at most ${context} for ${model}`);
    }
  }
  return idempotentResult(event, chat, async () =>
    json(200, settingsView(await chatRepository.updateSettings(chat, change))),
  );
});
