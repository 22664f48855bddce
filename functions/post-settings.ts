import { chatRepository } from './shared/chat-repository';
import { settingsView } from './shared/chat-views';
import { MODEL_CONTEXT_TOKENS } from './shared/config';
import { ValidationError } from './shared/errors';
import { chatOf, json, parseBody, route, schemas } from './shared/http';
import { idempotentResult } from './shared/idempotency';

/** `POST /{chat_id}/settings`: changes the given settings (null unsets one) and answers them all. */
export const handler = route(async (event) => {
  const chat = chatOf(event);
  const change = parseBody(event, schemas.settings);
  const context = change.model ? MODEL_CONTEXT_TOKENS[change.model] : undefined;
  if (context !== undefined && change.max_context_tokens && change.max_context_tokens > context) {
    throw new ValidationError(
      'invalid_body',
      `max_context_tokens must be at most ${context} for ${change.model}`,
    );
  }
  return idempotentResult(event, chat, async () =>
    json(200, settingsView(await chatRepository.updateSettings(chat, change))),
  );
});
