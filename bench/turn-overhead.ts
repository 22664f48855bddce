import type { ChatMessageParam, complete, ModelOptions } from '../functions/shared/openai';
import { apiEvent } from '../test/support/events';
import type { Invoke } from '../test/support/handlers';
import type { AbSamples } from './ab';
import { type CompletionRequestBody, REPLY, type Upstream, USER_MESSAGE } from './fixture';
import { checkInterrupted } from './lifecycle';

/** The functions' OpenAI client call: `complete()` of functions/shared/openai.ts. */
export type Complete = typeof complete;

/**
 * B of a pair: the request A sent upstream, sent again through the functions' own OpenAI client
 * (`complete()`: the same agent settings, headers, timeout and retries) with the very messages, as
 * message objects, and the very model options.
 */
export async function directCall(client: Complete, sent: CompletionRequestBody): Promise<string> {
  const options: ModelOptions = {
    model: sent.model,
    temperature: typeof sent.temperature === 'number' ? sent.temperature : undefined,
    maxTokens: typeof sent.max_completion_tokens === 'number' ? sent.max_completion_tokens : undefined,
  };
  const { content } = await client(sent.messages as unknown as ChatMessageParam[], options);
  return content;
}

export interface TurnCase {
  readonly label: string;
  readonly chat: string;
  /** The chat id of pair `i`; warm-up pairs get negative `i`. */
  readonly chatId: (i: number) => string;
  /** Messages each request must send upstream (checked on every A). */
  readonly sentMessages: number;
  readonly pairs: number;
  readonly warmup: number;
}

export interface HandlerBench {
  readonly postChat: Invoke;
  /** B's client, loaded the way `postChat` was (both from bundles, or both from the source). */
  readonly complete: Complete;
  readonly upstream: Upstream;
  readonly tenant: string;
}

export function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  collect?.();
  collect?.();
}

/**
 * One buffered turn through the handler (A) and, right after, the same request straight to the
 * stand-in through the handlers' OpenAI client (B). Answers both times in ms.
 */
async function pair(bench: HandlerBench, chatId: string, sentMessages: number): Promise<[number, number]> {
  const event = apiEvent({
    method: 'POST',
    resource: '/{chat_id}/chat',
    chatId,
    apiKeyId: bench.tenant,
    json: { content: USER_MESSAGE },
  });
  bench.upstream.capture();
  const a0 = performance.now();
  const result = await bench.postChat(event);
  const a1 = performance.now();
  const sent = bench.upstream.take();
  checkTurn(chatId, result.statusCode, result.body, sent, sentMessages);

  const b0 = performance.now();
  const direct = await directCall(bench.complete, sent);
  const b1 = performance.now();
  if (direct !== REPLY) throw new Error('direct call: unexpected reply');
  return [a1 - a0, b1 - b0];
}

/** A turn that did not do what the bench measures makes the whole bench fail. */
export function checkTurn(
  chatId: string,
  status: number,
  body: string,
  sent: CompletionRequestBody | undefined,
  sentMessages: number,
): asserts sent is CompletionRequestBody {
  if (status !== 200) throw new Error(`turn on ${chatId}: status ${status}: ${body.slice(0, 300)}`);
  const reply = JSON.parse(body) as { content?: string };
  if (reply.content !== REPLY) throw new Error(`turn on ${chatId}: unexpected reply ${body.slice(0, 200)}`);
  if (sent === undefined) throw new Error(`turn on ${chatId}: the stand-in saw no completion request`);
  if (sent.messages.length !== sentMessages) {
    throw new Error(
      `turn on ${chatId}: sent ${sent.messages.length} messages upstream, expected ${sentMessages} ` +
        '(the chat was not seeded as the bench assumes, or the context budget changed)',
    );
  }
}

/** Interleaved A/B pairs for one chat size, after its own warm-up. */
export async function measureCase(bench: HandlerBench, turnCase: TurnCase): Promise<AbSamples> {
  for (let i = 1; i <= turnCase.warmup; i += 1) {
    checkInterrupted();
    await pair(bench, turnCase.chatId(-i), turnCase.sentMessages);
  }
  gc();
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < turnCase.pairs; i += 1) {
    if (i % 100 === 0) checkInterrupted();
    const [ta, tb] = await pair(bench, turnCase.chatId(i), turnCase.sentMessages);
    a.push(ta);
    b.push(tb);
  }
  return { label: turnCase.label, chat: turnCase.chat, sentMessages: turnCase.sentMessages, a, b };
}
