import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { type ChatMessage, type ChatRef, chatRepository, type TurnContext } from './chat-repository';
import { complete, type TokenUsage } from './openai';

/** The answer of `POST /{chat_id}/chat` and `POST /{chat_id}/img`. */
export interface TurnReply {
  readonly content: string;
  readonly role: 'assistant';
  readonly tokens: TokenUsage;
}

/**
 * The prompt of a turn: the tenant's system prompt, the chat's system prompt, the stored history
 * and the new user message, in that order. Unset prompts are left out.
 */
export function composePrompt(context: TurnContext, user: ChatMessage): ChatCompletionMessageParam[] {
  const messages: ChatCompletionMessageParam[] = [];
  if (context.globalSystemPrompt) messages.push({ role: 'system', content: context.globalSystemPrompt });
  if (context.chatSystemPrompt) messages.push({ role: 'system', content: context.chatSystemPrompt });
  for (const message of [...context.history, user]) {
    messages.push(message as ChatCompletionMessageParam);
  }
  return messages;
}

/**
 * One chat turn: read the context, ask the model, store the user message and the reply together.
 * Nothing is stored unless the model answered, so a failed turn leaves no orphan message.
 */
export async function runTurn(chat: ChatRef, user: ChatMessage): Promise<TurnReply> {
  const context = await chatRepository.getTurnContext(chat);
  const completion = await complete(composePrompt(context, user));
  await chatRepository.appendTurn(chat, user, { role: 'assistant', content: completion.content });
  return { content: completion.content, role: 'assistant', tokens: completion.tokens };
}
