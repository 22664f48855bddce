import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { type ChatMessage, type ChatRef, chatRepository, type TurnContext } from './chat-repository';
import { loadStreamingConfig } from './config';
import { complete, streamCompletion, type TokenUsage } from './openai';
import type { EventSink } from './streaming-route';

const { keepAliveMs } = loadStreamingConfig();

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

/**
 * A streamed turn. Everything that can fail before the reply starts (storage, the upstream's
 * status) throws before `open` is called, so it still becomes a JSON error. Then each piece of
 * the reply goes out as a `delta` event, a comment keeps a silent connection open, and the turn is
 * stored once the reply is complete and the client is still there; `done` follows the write.
 */
export async function streamTurn(
  chat: ChatRef,
  user: ChatMessage,
  open: () => EventSink,
  signal: AbortSignal,
): Promise<void> {
  const context = await chatRepository.getTurnContext(chat);
  const upstream = await streamCompletion(composePrompt(context, user), signal);
  const sink = open();

  let keepAlive = setTimeout(function beat() {
    sink.comment('keep-alive');
    keepAlive = setTimeout(beat, keepAliveMs);
  }, keepAliveMs);
  let content = '';
  try {
    for await (const event of upstream) {
      if (event.type === 'delta') {
        content += event.content;
        sink.send('delta', { content: event.content });
        keepAlive.refresh();
        continue;
      }
      if (signal.aborted) return;
      await chatRepository.appendTurn(chat, user, { role: 'assistant', content });
      sink.send('done', { content, role: 'assistant', tokens: event.tokens } satisfies TurnReply);
    }
  } finally {
    clearTimeout(keepAlive);
  }
}
