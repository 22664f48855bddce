import { countTokens as countTextTokens } from 'gpt-tokenizer/encoding/o200k_base';
import type { MessageContent } from './chat-repository';

/**
 * Token counts with the real tokenizer of the models' encoding (o200k_base: GPT-4o, 4.1, 5), so
 * the context window is filled by what OpenAI will count, not by a character estimate. Each
 * message is counted once, when it is stored; choosing a window then only adds numbers.
 */

/** Tokens the chat format adds around each message (start, role, separator, end). */
export const MESSAGE_OVERHEAD_TOKENS = 4;
/** Tokens that prime the reply at the end of every prompt. */
export const REPLY_PRIMING_TOKENS = 3;
/**
 * What an image part is counted as: OpenAI's cost of a 1024×1024 image at high detail. The real
 * cost depends on the image, which we never download; this errs on the side of a smaller window.
 */
export const IMAGE_TOKENS = 765;

export function countTokens(text: string): number {
  return countTextTokens(text);
}

/** A message's tokens as it is sent in a prompt. */
export function messageTokens(content: MessageContent): number {
  if (typeof content === 'string') return countTokens(content) + MESSAGE_OVERHEAD_TOKENS;
  let total = MESSAGE_OVERHEAD_TOKENS;
  for (const part of content) total += part.type === 'text' ? countTokens(part.text) : IMAGE_TOKENS;
  return total;
}

const promptCache = new Map<string, number>();

/** A system prompt's tokens, cached: the same few prompts are counted on every turn. */
export function systemPromptTokens(content: string | null): number {
  if (!content) return 0;
  let tokens = promptCache.get(content);
  if (tokens === undefined) {
    tokens = messageTokens(content);
    if (promptCache.size >= 256) promptCache.clear();
    promptCache.set(content, tokens);
  }
  return tokens;
}
