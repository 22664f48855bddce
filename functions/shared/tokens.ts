import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GptEncoding } from 'gpt-tokenizer/GptEncoding';
import type { MessageContent } from './chat-repository';

/**
 * Token counts with the real tokenizer of the models' encoding (o200k_base: GPT-4o, 4.1, 5), so
 * the context window is filled by what OpenAI will count, not by a character estimate. Each
 * message is counted once, when it is stored; choosing a window then only adds numbers.
 *
 * The encoding's 200k merge ranks are 2 MB and take ~100 ms to load, too much for a cold start:
 * deployed functions ship them as a JSON file beside the bundle (written at bundling, see
 * infra/constructs/route-function.ts) and load them in the background at start-up; locally they
 * come from the gpt-tokenizer package.
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

/** The file the bundling step writes beside a function's bundle. */
export const RANKS_FILE = 'o200k_base.json';

type Ranks = Parameters<typeof GptEncoding.getEncodingApi>[1] extends () => infer R ? R : never;

async function loadRanks(): Promise<Ranks> {
  const bundled = typeof __dirname === 'string' ? join(__dirname, RANKS_FILE) : undefined;
  if (bundled !== undefined && existsSync(bundled))
    return JSON.parse(await readFile(bundled, 'utf8')) as Ranks;
  // Not bundled (the bundler leaves this module out): the package's own copy.
  const module = await import('gpt-tokenizer/bpeRanks/o200k_base');
  return module.default as Ranks;
}

let encoding: GptEncoding | undefined;
let loading: Promise<GptEncoding> | undefined;

/** Loads the tokenizer once; every count waits for this first. */
export function tokenizerReady(): Promise<GptEncoding> {
  loading ??= loadRanks()
    .then((ranks) => {
      encoding = GptEncoding.getEncodingApi('o200k_base', () => ranks);
      return encoding;
    })
    .catch((error: unknown) => {
      loading = undefined;
      throw error;
    });
  return loading;
}

function loaded(): GptEncoding {
  if (encoding === undefined) throw new Error('Count tokens only after tokenizerReady() has resolved');
  return encoding;
}

/**
 * Special tokens (`<|endoftext|>` and the like) in a message are plain text to OpenAI, and so to
 * us: by default the tokenizer refuses them, which would fail the turn.
 */
const SPECIAL_AS_TEXT = { disallowedSpecial: new Set<string>() };

export function countTokens(text: string): number {
  return loaded().countTokens(text, SPECIAL_AS_TEXT);
}

/** A message's tokens as it is sent in a prompt. */
export function messageTokens(content: MessageContent): number {
  if (typeof content === 'string') return countTokens(content) + MESSAGE_OVERHEAD_TOKENS;
  let total = MESSAGE_OVERHEAD_TOKENS;
  for (const part of content) total += part.type === 'text' ? countTokens(part.text) : IMAGE_TOKENS;
  return total;
}

/**
 * `count`, remembered per text for texts that come back again and again; the memory is dropped
 * whole once it holds `limit` texts.
 */
export function rememberCounts(count: (text: string) => number, limit: number): (text: string) => number {
  const counted = new Map<string, number>();
  return (text) => {
    let tokens = counted.get(text);
    if (tokens === undefined) {
      tokens = count(text);
      if (counted.size >= limit) counted.clear();
      counted.set(text, tokens);
    }
    return tokens;
  };
}

const promptTokens = rememberCounts(messageTokens, 256);

/** A system prompt's tokens, remembered: the same few prompts are counted on every turn. */
export function systemPromptTokens(content: string | null): number {
  return content ? promptTokens(content) : 0;
}
