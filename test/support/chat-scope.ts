import type { APIGatewayProxyEvent } from 'aws-lambda';
import { beforeEach } from 'vitest';
import { apiEvent, uniqueId } from './events';
import type { Invoke } from './handlers';

/** The tenant and chat a test works on. */
export interface ChatScope {
  readonly tenant: string;
  readonly chatId: string;
}

/**
 * A fresh tenant and chat for every test of the file (read them inside the test), with the fake
 * OpenAI's queue and log reset before each.
 */
export function freshChatPerTest(fake: { reset(): void }): ChatScope {
  const scope = { tenant: '', chatId: '' };
  beforeEach(() => {
    fake.reset();
    scope.tenant = uniqueId('t');
    scope.chatId = uniqueId('c');
  });
  return scope;
}

/** `POST /{chat_id}/chat` on the scope's chat. */
export function turnEvent(
  scope: ChatScope,
  json: Record<string, unknown>,
  headers: Record<string, string> = {},
): APIGatewayProxyEvent {
  return apiEvent({
    method: 'POST',
    resource: '/{chat_id}/chat',
    chatId: scope.chatId,
    apiKeyId: scope.tenant,
    json,
    headers,
  });
}

/** `POST /{chat_id}/clear` on the scope's chat. */
export function clearEvent(scope: ChatScope, headers: Record<string, string> = {}): APIGatewayProxyEvent {
  return apiEvent({
    method: 'POST',
    resource: '/{chat_id}/clear',
    chatId: scope.chatId,
    apiKeyId: scope.tenant,
    headers,
  });
}

/** The scope's chat history, through `GET /{chat_id}/chat`. */
export async function historyOf(
  getChat: Invoke,
  scope: ChatScope,
): Promise<{ role: string; content: string }[]> {
  const result = await getChat(
    apiEvent({ resource: '/{chat_id}/chat', chatId: scope.chatId, apiKeyId: scope.tenant }),
  );
  return JSON.parse(result.body);
}

/**
 * One turn on a throwaway chat: a process's first turn loads the tokenizer, a pause of its own
 * that timing-sensitive tests keep out of their measurements.
 */
export function warmUpTurn(postChat: Invoke): Promise<unknown> {
  return postChat(
    apiEvent({
      method: 'POST',
      resource: '/{chat_id}/chat',
      chatId: uniqueId('warm'),
      apiKeyId: 'warm',
      json: { content: 'hi' },
    }),
  );
}
