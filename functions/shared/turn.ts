import { setTimeout as sleep } from 'node:timers/promises';
import {
  type ChatMessage,
  type ChatRef,
  type ChatSettings,
  chatRepository,
  type HistoryTail,
  type StoredResponse,
  TURN_READ_PAIRS,
  type TurnContext,
  type TurnLease,
} from './chat-repository';
import {
  FALLBACK_CONTEXT_TOKENS,
  loadChatConfig,
  loadStreamingConfig,
  loadTurnConfig,
  MODEL_CONTEXT_TOKENS,
} from './config';
import { ChatBusyError, TurnNotStoredError, ValidationError } from './errors';
import type { ClaimedRecord } from './idempotency';
import { annotate, annotateContent } from './observability';
import {
  complete,
  type ModelOptions,
  type PromptMessage,
  type ReplyStream,
  streamCompletion,
  type TokenUsage,
} from './openai';
import type { EventSink } from './streaming-route';
import {
  MESSAGE_OVERHEAD_TOKENS,
  messageTokens,
  REPLY_PRIMING_TOKENS,
  systemPromptTokens,
  tokenizerReady,
} from './tokens';

const { keepAliveMs } = loadStreamingConfig();
const { leaseMs } = loadTurnConfig();
const chatConfig = loadChatConfig();
// Started at cold start, so the first turn finds the tokenizer loaded or nearly so.
tokenizerReady().catch(() => undefined);

/** The answer of `POST /{chat_id}/chat` and `POST /{chat_id}/img`. */
export interface TurnReply {
  readonly content: string;
  readonly role: 'assistant';
  readonly tokens: TokenUsage;
}

export interface TurnOptions {
  /** How long to wait for a turn already running on the chat; 0 answers 409 at once. */
  readonly waitMs: number;
  /** The request's idempotency record, to keep the answer in with the turn (see `idempotently`). */
  readonly keep?: {
    readonly record: ClaimedRecord;
    readonly answer: (reply: TurnReply) => StoredResponse;
  };
}

/**
 * The prompt of a turn: the tenant's system prompt, the chat's system prompt, the stored history
 * and the new user message, in that order. Unset prompts are left out. The history stays the JSON
 * Redis holds (see `HistoryTail`) and goes into the request unparsed.
 */
export function composePrompt(context: TurnContext, user: ChatMessage): PromptMessage[] {
  const messages: PromptMessage[] = [];
  if (context.globalSystemPrompt) messages.push({ role: 'system', content: context.globalSystemPrompt });
  if (context.chatSystemPrompt) messages.push({ role: 'system', content: context.chatSystemPrompt });
  for (const message of context.history.messages) messages.push(message);
  messages.push(user);
  return messages;
}

/**
 * The prompt budget of a chat: its own `max_context_tokens`, else the deployment's, else its
 * model's context size less the tokens kept for the reply.
 */
function contextTokens(settings: ChatSettings): number {
  if (settings.max_context_tokens !== undefined) return settings.max_context_tokens;
  if (chatConfig.maxContextTokens !== undefined) return chatConfig.maxContextTokens;
  const model = settings.model ?? chatConfig.defaultModel;
  const reserve = settings.max_tokens ?? chatConfig.replyReserveTokens;
  const size = Object.hasOwn(MODEL_CONTEXT_TOKENS, model) ? MODEL_CONTEXT_TOKENS[model] : undefined;
  return (size ?? FALLBACK_CONTEXT_TOKENS) - reserve;
}

/**
 * The window: the newest whole pairs that fit what the budget leaves once the system prompts,
 * the new message and the reply priming are counted, up to the first pair that does not fit.
 * The lease read the newest pairs; a window wider than that reads on, a growing chunk at a time,
 * so a turn reads O(window) whatever the chat's length. A message that cannot fit even alone is
 * refused.
 */
async function fitWindow(chat: ChatRef, context: TurnContext, userTokens: number): Promise<TurnContext> {
  const budget =
    contextTokens(context.settings) -
    userTokens -
    systemPromptTokens(context.globalSystemPrompt) -
    systemPromptTokens(context.chatSystemPrompt) -
    REPLY_PRIMING_TOKENS;
  if (budget < 0) {
    throw new ValidationError(
      'message_too_large',
      "The message does not fit the chat's context window, even without any history",
    );
  }
  let tail: HistoryTail = context.history;
  let used = 0;
  let taken = 0;
  for (;;) {
    const costs = tail.pairTokens;
    while (taken < costs.length && used + (costs[taken] ?? 0) <= budget) used += costs[taken++] ?? 0;
    if (taken < costs.length || tail.olderPairs === 0) break;
    const older = await chatRepository.readOlderPairs(
      chat,
      costs.length,
      Math.max(TURN_READ_PAIRS, 3 * costs.length),
    );
    tail = {
      messages: [...older.messages, ...tail.messages],
      pairTokens: [...costs, ...older.pairTokens],
      olderPairs: older.olderPairs,
    };
  }
  if (taken === tail.pairTokens.length) return { ...context, history: tail };
  const messages = tail.messages.slice(tail.messages.length - 2 * taken);
  const olderPairs = tail.olderPairs + tail.pairTokens.length - taken;
  return { ...context, history: { messages, pairTokens: tail.pairTokens.slice(0, taken), olderPairs } };
}

function modelOptions(context: TurnContext): ModelOptions {
  const { model, temperature, max_tokens } = context.settings;
  return { model, temperature, maxTokens: max_tokens };
}

/** A lease this turn holds, with the new message's tokens (counted once, stored with it). */
interface HeldTurn extends TurnLease {
  readonly userTokens: number;
}

/**
 * Takes the chat's turn lease and reads its context. A busy chat answers 409 at once, or, with
 * `waitMs`, is polled with a growing, jittered pause (capped by the holder's remaining lease).
 */
async function acquire(chat: ChatRef, user: ChatMessage, waitMs: number): Promise<HeldTurn> {
  const deadline = Date.now() + waitMs;
  let userTokens: number | undefined;
  for (let attempt = 0; ; attempt += 1) {
    // The first attempt reads the history beside the lease; a poll of a busy chat reads it only
    // once the lease is held, so waiting turns do not read history they would throw away.
    const pending = chatRepository.beginTurn(chat, leaseMs, { readAhead: attempt === 0 });
    if (userTokens === undefined) {
      // Counted while Redis answers: the lease request is already on its way.
      pending.catch(() => undefined);
      try {
        await tokenizerReady();
        userTokens = messageTokens(user.content);
      } catch (error) {
        const result = await pending.catch(() => undefined);
        if (result?.acquired) await release(chat, result.lease);
        throw error;
      }
    }
    const result = await pending;
    if (result.acquired) {
      try {
        return {
          ...result.lease,
          context: await fitWindow(chat, result.lease.context, userTokens),
          userTokens,
        };
      } catch (error) {
        await release(chat, result.lease);
        throw error;
      }
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new ChatBusyError();
    const backoff = Math.min(5 * 2 ** attempt, 100) * (0.5 + Math.random());
    await sleep(Math.max(1, Math.min(backoff, remaining, result.retryInMs + 1)));
  }
}

/**
 * What a reply costs in later prompts: its text's tokens as OpenAI counted them when it generated
 * it (the same count the tokenizer would give, without the work), plus the chat format. The
 * tokenizer counts when OpenAI gave no figure, or one that cannot be right: every token is at
 * least one byte, and a reply's tokens average a few characters, never more than 32.
 */
function replyTokens(content: string, reported: number | undefined): number {
  const plausible =
    reported !== undefined &&
    Number.isInteger(reported) &&
    reported * 32 >= content.length &&
    reported <= Buffer.byteLength(content);
  return plausible ? reported + MESSAGE_OVERHEAD_TOKENS : messageTokens(content);
}

/** Stores the turn; answers what the client gets. */
async function commit(
  chat: ChatRef,
  lease: HeldTurn,
  user: ChatMessage,
  completion: { readonly content: string; readonly tokens: TokenUsage; readonly replyTokens?: number },
  keep: TurnOptions['keep'],
): Promise<TurnReply> {
  const { content, tokens: usage } = completion;
  const reply: TurnReply = { content, role: 'assistant', tokens: usage };
  const result = await chatRepository.commitTurn(chat, lease, {
    user,
    userTokens: lease.userTokens,
    assistant: { role: 'assistant', content },
    assistantTokens: replyTokens(content, completion.replyTokens),
    usage,
    ...(keep ? { keep: keep.record.keeping(keep.answer(reply)) } : {}),
  });
  if (result === 'stored') {
    keep?.record.keptInWrite();
    annotate({ turn: true, prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens });
    annotateContent({ user: user.content, assistant: content });
  }
  if (result === 'lease_lost') {
    throw new TurnNotStoredError(
      'turn_expired',
      'The turn outlived its lease and another turn may hold the chat now; it was not stored',
    );
  }
  if (result === 'cleared') {
    throw new TurnNotStoredError(
      'chat_cleared',
      'The chat was cleared while this turn ran; it was not stored',
    );
  }
  return reply;
}

/** Gives the lease back after a failed turn; an outage here changes nothing (it expires anyway). */
async function release(chat: ChatRef, lease: TurnLease): Promise<void> {
  await chatRepository.releaseLease(chat, lease).catch(() => undefined);
}

/**
 * One chat turn: hold the chat, read its context, ask the model, then store the user message and
 * the reply together. Nothing is stored unless the model answered and the turn still held the
 * chat, so a failed turn leaves no orphan message and a late one cannot scramble the history.
 */
export async function runTurn(chat: ChatRef, user: ChatMessage, options: TurnOptions): Promise<TurnReply> {
  const lease = await acquire(chat, user, options.waitMs);
  let stored = false;
  try {
    const completion = await complete(composePrompt(lease.context, user), modelOptions(lease.context));
    const reply = await commit(chat, lease, user, completion, options.keep);
    stored = true;
    return reply;
  } finally {
    if (!stored) await release(chat, lease);
  }
}

/**
 * A streamed turn. Everything that can fail before the reply starts (the lease, storage, the
 * upstream's status) throws before `open` is called, so it still becomes a JSON error. Then each
 * piece of the reply goes out as a `delta` event, a comment keeps a silent connection open, the
 * lease is renewed while the reply runs, and the turn is stored once the reply is complete and
 * the client is still there; `done` follows the write.
 */
export async function streamTurn(
  chat: ChatRef,
  user: ChatMessage,
  options: TurnOptions & { open: () => EventSink; signal: AbortSignal },
): Promise<TurnReply | undefined> {
  const lease = await acquire(chat, user, options.waitMs);
  const leaseLost = new AbortController();
  const renewal = setInterval(() => {
    chatRepository
      .renewLease(chat, lease, leaseMs, options.keep?.record.id)
      .then((held) => held || leaseLost.abort())
      .catch(() => undefined);
  }, leaseMs / 3);
  let keepAlive: NodeJS.Timeout | undefined;
  let stored = false;
  let upstream: ReplyStream | undefined;
  try {
    const signal = AbortSignal.any([options.signal, leaseLost.signal]);
    upstream = await streamCompletion(
      composePrompt(lease.context, user),
      signal,
      modelOptions(lease.context),
    );
    const sink = options.open();
    keepAlive = setTimeout(function beat() {
      sink.comment('keep-alive');
      keepAlive = setTimeout(beat, keepAliveMs);
    }, keepAliveMs);

    let content = '';
    for await (const event of upstream) {
      if (event.type === 'delta') {
        content += event.content;
        sink.send('delta', { content: event.content });
        keepAlive.refresh();
        continue;
      }
      if (options.signal.aborted) return undefined;
      const reply = await commit(
        chat,
        lease,
        user,
        { content, tokens: event.tokens, replyTokens: event.replyTokens },
        options.keep,
      );
      stored = true;
      sink.send('done', reply);
      return reply;
    }
    return undefined;
  } catch (error) {
    if (leaseLost.signal.aborted && !options.signal.aborted) {
      throw new TurnNotStoredError(
        'turn_expired',
        'The turn lost its lease while streaming; it was not stored',
        {
          cause: error,
        },
      );
    }
    throw error;
  } finally {
    // A no-op once the reply was read to its end; otherwise (say `open()` threw) drops the upstream.
    upstream?.cancel();
    clearInterval(renewal);
    clearTimeout(keepAlive);
    if (!stored) await release(chat, lease);
  }
}
