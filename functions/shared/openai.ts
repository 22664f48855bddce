import OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import type { CompletionUsage } from 'openai/resources/completions';
import { loadOpenAiConfig } from './config';
import {
  ChatProxyError,
  UpstreamError,
  UpstreamRateLimitedError,
  UpstreamRejectedError,
  UpstreamTimeoutError,
} from './errors';
import { annotate, timeUpstream } from './observability';
import { getSecretString } from './secrets';

export const openAiConfig = loadOpenAiConfig();

export interface TokenUsage {
  readonly completion_tokens: number;
  readonly prompt_tokens: number;
  readonly total_tokens: number;
}

export interface Completion {
  readonly content: string;
  readonly tokens: TokenUsage;
}

export interface ModerationResult {
  readonly id: string;
  readonly model: string;
  readonly results: unknown[];
}

let client: OpenAI | undefined;
let clientKey: string | undefined;

/**
 * The container's OpenAI client. It is rebuilt only when the key changes, which happens after a
 * 401 makes us read the secret again (a rotated key is picked up without a redeploy).
 */
async function getClient(forceRefresh: boolean): Promise<OpenAI> {
  const key =
    'value' in openAiConfig.apiKey
      ? openAiConfig.apiKey.value
      : await getSecretString(openAiConfig.apiKey.secretArn, { forceRefresh });
  if (client === undefined || key !== clientKey) {
    client = new OpenAI({
      apiKey: key,
      baseURL: openAiConfig.baseURL,
      timeout: openAiConfig.timeoutMs,
      maxRetries: openAiConfig.maxRetries,
    });
    clientKey = key;
  }
  return client;
}

type Request<T> = (openai: OpenAI) => Promise<T>;

/** Runs a request; after a 401 it reads the key secret again and retries once with the new key. */
async function call<T>(request: Request<T>): Promise<T> {
  try {
    return await request(await getClient(false));
  } catch (error) {
    const canRefresh = error instanceof OpenAI.AuthenticationError && 'secretArn' in openAiConfig.apiKey;
    if (!canRefresh) throw toChatProxyError(error);
  }
  try {
    return await request(await getClient(true));
  } catch (error) {
    throw toChatProxyError(error);
  }
}

/**
 * Runs a request under a deadline. The SDK's own timeout stops at the response headers, so a
 * server that sends headers and then stalls would otherwise hold the request forever.
 */
async function callWithDeadline<T>(request: (openai: OpenAI, signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = AbortSignal.timeout(openAiConfig.timeoutMs);
  try {
    return await call((openai) => request(openai, deadline));
  } catch (error) {
    if (deadline.aborted) throw new UpstreamTimeoutError(undefined, { cause: error });
    throw error;
  }
}

/** Maps the SDK's errors to ours; the message never carries our key or a stack. */
export function toChatProxyError(error: unknown): unknown {
  if (error instanceof ChatProxyError) return error;
  if (error instanceof OpenAI.APIConnectionTimeoutError)
    return new UpstreamTimeoutError(undefined, { cause: error });
  if (error instanceof OpenAI.APIUserAbortError) return error;
  if (error instanceof OpenAI.APIConnectionError) {
    return new UpstreamError('upstream_unreachable', 'OpenAI could not be reached', { cause: error });
  }
  if (error instanceof OpenAI.RateLimitError) {
    return new UpstreamRateLimitedError(
      'OpenAI is rate-limiting requests, try again later',
      error.headers.get('retry-after') ?? undefined,
      { cause: error },
    );
  }
  if (error instanceof OpenAI.AuthenticationError || error instanceof OpenAI.PermissionDeniedError) {
    return new UpstreamError('upstream_auth_failed', 'OpenAI rejected the configured API key', {
      cause: error,
    });
  }
  if (error instanceof OpenAI.BadRequestError || error instanceof OpenAI.UnprocessableEntityError) {
    return new UpstreamRejectedError(`OpenAI rejected the request: ${upstreamMessage(error)}`, {
      cause: error,
    });
  }
  if (error instanceof OpenAI.APIError) {
    return new UpstreamError('upstream_error', `OpenAI answered with status ${error.status ?? 'unknown'}`, {
      cause: error,
    });
  }
  return error;
}

function upstreamMessage(error: InstanceType<typeof OpenAI.APIError>): string {
  const detail = (error.error as { message?: unknown } | undefined)?.message;
  return typeof detail === 'string' && detail !== '' ? detail.slice(0, 500) : `status ${error.status}`;
}

/** One chat completion with the deployment's model and parameters. */
export async function complete(
  messages: ChatCompletionMessageParam[],
  model: ModelOptions = {},
): Promise<Completion> {
  const completion = await timeUpstream(() =>
    callWithDeadline((openai, signal) =>
      openai.chat.completions.create({ ...completionParams(messages, model), stream: false }, { signal }),
    ),
  );
  const message = completion.choices?.[0]?.message;
  if (message === undefined) {
    throw new UpstreamError('upstream_invalid_response', 'OpenAI answered without a message');
  }
  return { content: message.content ?? message.refusal ?? '', tokens: tokensOf(completion.usage) };
}

/** A chat's own model settings; each falls back to the deployment's. */
export interface ModelOptions {
  readonly model?: string;
  readonly temperature?: number;
  readonly maxTokens?: number;
}

function completionParams(messages: ChatCompletionMessageParam[], options: ModelOptions) {
  const temperature = options.temperature ?? openAiConfig.temperature;
  const maxTokens = options.maxTokens ?? openAiConfig.maxTokens;
  return {
    model: options.model ?? openAiConfig.model,
    messages,
    ...(temperature === undefined ? {} : { temperature }),
    ...(maxTokens === undefined ? {} : { max_completion_tokens: maxTokens }),
  };
}

function tokensOf(usage: CompletionUsage | null | undefined): TokenUsage {
  return {
    completion_tokens: usage?.completion_tokens ?? 0,
    prompt_tokens: usage?.prompt_tokens ?? 0,
    total_tokens: usage?.total_tokens ?? 0,
  };
}

/** What a streamed completion yields: text as it is written, then the token usage. */
export type StreamEvent =
  | { readonly type: 'delta'; readonly content: string }
  | { readonly type: 'end'; readonly tokens: TokenUsage };

/**
 * Starts a streamed completion. The promise settles once OpenAI has answered with its status, so
 * every upstream refusal (429, 5xx, bad key) is thrown before the caller writes a byte; the
 * returned iterator then yields the reply as it is written. `signal` aborts the upstream request
 * (the client went away). No progress for OPENAI_TIMEOUT_MS is a timeout.
 */
export async function streamCompletion(
  messages: ChatCompletionMessageParam[],
  signal: AbortSignal,
  model: ModelOptions = {},
): Promise<AsyncGenerator<StreamEvent>> {
  const started = performance.now();
  const idle = new AbortController();
  let timer = setTimeout(() => idle.abort(), openAiConfig.timeoutMs);
  const progressed = () => {
    clearTimeout(timer);
    timer = setTimeout(() => idle.abort(), openAiConfig.timeoutMs);
  };
  const failure = (error: unknown) =>
    idle.signal.aborted ? new UpstreamTimeoutError(undefined, { cause: error }) : toChatProxyError(error);
  // Mid-stream, the SDK passes on the fetch error as it is (e.g. undici's "terminated").
  const cutOff = (error: unknown) => {
    const mapped = failure(error);
    if (mapped instanceof ChatProxyError || signal.aborted) return mapped;
    return new UpstreamError('upstream_incomplete', 'OpenAI ended the reply before it was complete', {
      cause: error,
    });
  };

  let stream: AsyncIterable<ChatCompletionChunk>;
  try {
    stream = await call((openai) =>
      openai.chat.completions.create(
        { ...completionParams(messages, model), stream: true, stream_options: { include_usage: true } },
        { signal: AbortSignal.any([signal, idle.signal]) },
      ),
    );
  } catch (error) {
    clearTimeout(timer);
    throw failure(error);
  }

  return (async function* () {
    let usage: CompletionUsage | null | undefined;
    let finished = false;
    try {
      for await (const chunk of stream) {
        progressed();
        const choice = chunk.choices?.[0];
        if (choice?.delta?.content) yield { type: 'delta', content: choice.delta.content } as const;
        finished ||= Boolean(choice?.finish_reason);
        usage = chunk.usage ?? usage;
      }
    } catch (error) {
      throw cutOff(error);
    } finally {
      clearTimeout(timer);
      annotate({ upstream_latency_ms: Math.round(performance.now() - started) });
    }
    // The SDK ends the iteration quietly on an abort, and a cut connection can look like a short
    // stream: only a finish reason says the reply is complete.
    if (idle.signal.aborted) throw new UpstreamTimeoutError();
    if (signal.aborted) throw signal.reason;
    if (!finished)
      throw new UpstreamError('upstream_incomplete', 'OpenAI ended the reply before it was complete');
    yield { type: 'end', tokens: tokensOf(usage) } as const;
  })();
}

/** OpenAI moderation of one text, answered as OpenAI gives it. */
export async function moderate(input: string): Promise<ModerationResult> {
  const { id, model, results } = await timeUpstream(() =>
    callWithDeadline((openai, signal) =>
      openai.moderations.create({ model: openAiConfig.moderationModel, input }, { signal }),
    ),
  );
  return { id, model, results };
}
