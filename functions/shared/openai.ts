import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { loadOpenAiConfig } from './config';
import {
  ChatProxyError,
  UpstreamError,
  UpstreamRateLimitedError,
  UpstreamRejectedError,
  UpstreamTimeoutError,
} from './errors';
import { timeUpstream } from './observability';
import {
  Exchange,
  errorMessageOf,
  IncompleteBodyError,
  type KeyHeaders,
  OpenAiEndpoint,
  readText,
  retryDelayMs,
  SseDecoder,
  shouldRetry,
} from './openai-wire';
import { getSecretString } from './secrets';

/**
 * The OpenAI client: chat completions (buffered or streamed) and moderation over OpenAI's HTTP
 * API, with the deployment's key, model and limits. It is on every turn's hot path, so a call
 * costs one request body built as a string, one timer and precomputed headers.
 */

export const openAiConfig = loadOpenAiConfig();

const endpoint = new OpenAiEndpoint(openAiConfig.baseURL ?? 'https://api.openai.com/v1');

export interface TokenUsage {
  readonly completion_tokens: number;
  readonly prompt_tokens: number;
  readonly total_tokens: number;
}

export interface Completion {
  readonly content: string;
  readonly tokens: TokenUsage;
  /** The reply's own tokens as OpenAI counted them, when its usage says (see `replyTokensOf`). */
  readonly replyTokens?: number;
}

/** OpenAI's usage object as it answers it: the totals, and what the completion tokens hold. */
interface UpstreamUsage extends Partial<TokenUsage> {
  readonly completion_tokens_details?: {
    readonly reasoning_tokens?: number;
    readonly audio_tokens?: number;
    readonly rejected_prediction_tokens?: number;
  } | null;
}

/**
 * The tokens of the reply's text alone: the completion tokens less those that are not part of it
 * (hidden reasoning, audio, rejected predicted output). Undefined when the usage gives none.
 */
function replyTokensOf(usage: UpstreamUsage | null | undefined): number | undefined {
  const completion = usage?.completion_tokens;
  if (typeof completion !== 'number' || !Number.isFinite(completion)) return undefined;
  const details = usage?.completion_tokens_details;
  const hidden =
    (details?.reasoning_tokens ?? 0) +
    (details?.audio_tokens ?? 0) +
    (details?.rejected_prediction_tokens ?? 0);
  return completion - hidden;
}

export interface ModerationResult {
  readonly id: string;
  readonly model: string;
  readonly results: unknown[];
}

/** A part of a message's content, as OpenAI's chat API takes it (image turns). */
export type ContentPart =
  | { readonly type: 'text'; readonly text: string }
  | { readonly type: 'image_url'; readonly image_url: { readonly url: string } };

/** One prompt message, as OpenAI's chat API takes it. */
export interface ChatMessageParam {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string | readonly ContentPart[];
}

/**
 * A prompt message: an object, or one message already serialized as JSON, as text or as UTF-8
 * bytes (e.g. read from storage as it was stored), which goes into the request body as it is,
 * unparsed. Such JSON must be one object of a `ChatMessageParam`.
 */
export type PromptMessage = ChatMessageParam | string | Uint8Array;

/** A chat's own model settings; each falls back to the deployment's. */
export interface ModelOptions {
  readonly model?: string;
  readonly temperature?: number;
  readonly maxTokens?: number;
}

/** What a streamed completion yields: text as it is written, then the token usage. */
export type StreamEvent =
  | { readonly type: 'delta'; readonly content: string }
  | { readonly type: 'end'; readonly tokens: TokenUsage; readonly replyTokens?: number };

/** A character node refuses in a header value (its own check), such as a control character. */
const NOT_IN_HEADER = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * The headers of `key` without surrounding whitespace (a secret stored with a trailing newline);
 * undefined when what is left is empty or holds a character no header can carry.
 */
function headersOf(key: string): KeyHeaders | undefined {
  const trimmed = key.trim();
  return trimmed === '' || NOT_IN_HEADER.test(trimmed) ? undefined : endpoint.headersFor(trimmed);
}

/** The headers of a key given in the environment; a secret-held key's are built when read. */
const fixedHeaders = 'value' in openAiConfig.apiKey ? headersOf(openAiConfig.apiKey.value) : undefined;
/** The secret's value as last read, and its headers. */
let secretValue: string | undefined;
let secretHeaders: KeyHeaders | undefined;

/**
 * The headers of the current key. A secret-held key is read through the secrets cache; with
 * `forceRefresh` (after a 401) it is read again, so a rotated key is picked up without a redeploy.
 * A key that cannot be sent is `upstream_auth_failed` (a secret-held one after one more read, in
 * case it has been fixed), with a message that never holds the key.
 */
async function keyHeaders(forceRefresh: boolean): Promise<KeyHeaders> {
  const { apiKey } = openAiConfig;
  if ('value' in apiKey) {
    if (fixedHeaders === undefined) throw unusableKey();
    return fixedHeaders;
  }
  let headers = secretKeyHeaders(await getSecretString(apiKey.secretArn, { forceRefresh }));
  if (headers === undefined && !forceRefresh) {
    headers = secretKeyHeaders(await getSecretString(apiKey.secretArn, { forceRefresh: true }));
  }
  if (headers === undefined) throw unusableKey();
  return headers;
}

function secretKeyHeaders(value: string): KeyHeaders | undefined {
  if (value !== secretValue) {
    secretValue = value;
    secretHeaders = headersOf(value);
  }
  return secretHeaders;
}

function unusableKey(): UpstreamError {
  return new UpstreamError(
    'upstream_auth_failed',
    'The configured OpenAI API key is empty or holds characters an HTTP header cannot carry',
  );
}

const COMMA = Buffer.from(',');

/**
 * The request body of a chat completion, built around the messages without re-serializing any:
 * messages given as bytes are copied in as they are, never decoded.
 */
function completionBody(messages: readonly PromptMessage[], options: ModelOptions, stream: boolean): Buffer {
  const temperature = options.temperature ?? openAiConfig.temperature;
  const maxTokens = options.maxTokens ?? openAiConfig.maxTokens;
  const parts: Uint8Array[] = [];
  let text = `{"model":${JSON.stringify(options.model ?? openAiConfig.model)},"messages":[`;
  for (let i = 0; i < messages.length; i += 1) {
    const message = messages[i] as PromptMessage;
    if (i > 0) text += ',';
    if (message instanceof Uint8Array) {
      parts.push(text === ',' ? COMMA : Buffer.from(text), message);
      text = '';
    } else {
      text += typeof message === 'string' ? message : JSON.stringify(message);
    }
  }
  text += ']';
  if (temperature !== undefined) text += `,"temperature":${JSON.stringify(temperature)}`;
  if (maxTokens !== undefined) text += `,"max_completion_tokens":${JSON.stringify(maxTokens)}`;
  if (stream) text += ',"stream":true,"stream_options":{"include_usage":true}';
  parts.push(Buffer.from(`${text}}`));
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

/**
 * Sends the exchange's request until OpenAI answers 2xx, and returns that response. Retries (up to
 * OPENAI_MAX_RETRIES) what the `openai` SDK retried: connection failures, 408, 409, 429 and 5xx
 * (or as `x-should-retry` says), waiting as the answer asks or backing off, never past the
 * deadline. A 401 with a secret-held key reads the secret again and tries once more. A request
 * that died on a kept-alive socket the server had closed (so the server never saw it; see
 * `Exchange.diedOnStaleSocket`) is sent again at once, once per call, outside OPENAI_MAX_RETRIES.
 */
async function open(exchange: Exchange, stream: boolean): Promise<IncomingMessage> {
  let headers = fixedHeaders ?? (await keyHeaders(false));
  let refreshed = false;
  let resent = false;
  let retries = 0;
  for (;;) {
    if (exchange.stopped) throw new Error('The OpenAI call stopped before it was sent');
    let response: IncomingMessage;
    try {
      response = await exchange.send(stream ? headers.stream : headers.json);
    } catch (error) {
      if (exchange.stopped) throw error;
      if (!resent && exchange.diedOnStaleSocket(error)) {
        resent = true;
        continue;
      }
      if (retries < openAiConfig.maxRetries && (await exchange.pause(retryDelayMs(retries++)))) continue;
      throw new UpstreamError('upstream_unreachable', 'OpenAI could not be reached', { cause: error });
    }
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return response;
    if (status === 401 && !refreshed && 'secretArn' in openAiConfig.apiKey) {
      response.resume();
      refreshed = true;
      headers = await keyHeaders(true);
      continue;
    }
    if (retries < openAiConfig.maxRetries && shouldRetry(status, response.headers)) {
      const wait = exchange.pause(retryDelayMs(retries, response.headers));
      if (wait !== false) {
        response.resume();
        retries += 1;
        if (await wait) continue;
        throw new Error('The OpenAI call stopped while waiting to retry');
      }
    }
    throw statusError(status, response.headers, await readText(response));
  }
}

/**
 * Maps a failed call to our errors; the message never carries our key or a stack. A timed-out
 * exchange is a timeout whatever the failure looked like.
 */
function failure(error: unknown, exchange: Exchange): unknown {
  if (exchange.timedOut) return new UpstreamTimeoutError(undefined, { cause: error });
  return toChatProxyError(error);
}

/**
 * Maps what the wire layer throws to our errors: ours pass through, a body cut short is an
 * incomplete reply, a network error is an unreachable OpenAI; anything else is left as it is.
 */
export function toChatProxyError(error: unknown): unknown {
  if (error instanceof ChatProxyError) return error;
  if (error instanceof IncompleteBodyError) {
    return new UpstreamError('upstream_incomplete', 'OpenAI ended the reply before it was complete', {
      cause: error,
    });
  }
  if (error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string') {
    return new UpstreamError('upstream_unreachable', 'OpenAI could not be reached', { cause: error });
  }
  return error;
}

/** The error of a non-2xx answer. */
function statusError(status: number, headers: IncomingHttpHeaders, body: string): ChatProxyError {
  if (status === 429) {
    return new UpstreamRateLimitedError(
      'OpenAI is rate-limiting requests, try again later',
      headers['retry-after'],
    );
  }
  if (status === 401 || status === 403) {
    return new UpstreamError('upstream_auth_failed', 'OpenAI rejected the configured API key');
  }
  if (status === 400 || status === 422) {
    const reason = errorMessageOf(body)?.slice(0, 500) ?? `status ${status}`;
    return new UpstreamRejectedError(`OpenAI rejected the request: ${reason}`);
  }
  return new UpstreamError('upstream_error', `OpenAI answered with status ${status}`);
}

function invalidResponse(message: string, cause?: unknown): UpstreamError {
  return new UpstreamError('upstream_invalid_response', message, { cause });
}

/** A buffered call: `POST path` and OpenAI's JSON answer, all within OPENAI_TIMEOUT_MS. */
async function post(path: string, body: Buffer): Promise<unknown> {
  const recordLatency = timeUpstream();
  const exchange = new Exchange(endpoint, path, body, openAiConfig.timeoutMs);
  let text: string;
  try {
    text = await readText(await open(exchange, false));
  } catch (error) {
    throw failure(error, exchange);
  } finally {
    exchange.finish();
    recordLatency();
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw invalidResponse('OpenAI answered with a body that is not JSON', error);
  }
}

interface CompletionResponse {
  readonly choices?: readonly {
    readonly message?: { readonly content?: string | null; readonly refusal?: string | null } | null;
  }[];
  readonly usage?: UpstreamUsage | null;
}

/** One chat completion with the deployment's model and parameters. */
export async function complete(
  messages: readonly PromptMessage[],
  model: ModelOptions = {},
): Promise<Completion> {
  const completion = (await post('/chat/completions', completionBody(messages, model, false))) as
    | CompletionResponse
    | null
    | undefined;
  const message = completion?.choices?.[0]?.message;
  if (message === undefined || message === null) {
    throw invalidResponse('OpenAI answered without a message');
  }
  const replyTokens = replyTokensOf(completion?.usage);
  return {
    content: message.content ?? message.refusal ?? '',
    tokens: tokensOf(completion?.usage),
    ...(replyTokens === undefined ? {} : { replyTokens }),
  };
}

function tokensOf(usage: Partial<TokenUsage> | null | undefined): TokenUsage {
  return {
    completion_tokens: usage?.completion_tokens ?? 0,
    prompt_tokens: usage?.prompt_tokens ?? 0,
    total_tokens: usage?.total_tokens ?? 0,
  };
}

/**
 * A streamed reply: its events, in order, from an iterator that holds the upstream request from
 * the moment it is returned. Leaving it before its end in any way (`return()`, `throw()`,
 * `cancel()`, or a `for await` left early) drops the upstream request at once, even before the
 * first `next()`.
 */
export interface ReplyStream extends AsyncIterableIterator<StreamEvent> {
  [Symbol.asyncIterator](): ReplyStream;
  return(value?: unknown): Promise<IteratorResult<StreamEvent>>;
  throw(error?: unknown): Promise<IteratorResult<StreamEvent>>;
  /** Drops the upstream request unless the reply has been read to its end; safe to call at any time. */
  cancel(): void;
}

/**
 * Starts a streamed completion. The promise settles once OpenAI has answered with its status, so
 * every upstream refusal (429, 5xx, bad key) is thrown before the caller writes a byte; the
 * returned stream then yields the reply as it is written, and must be read to its end or
 * cancelled. `signal` aborts the upstream request (the client went away), after which the stream
 * throws `signal.reason`. No progress for OPENAI_TIMEOUT_MS is a timeout.
 */
export async function streamCompletion(
  messages: readonly PromptMessage[],
  signal: AbortSignal,
  model: ModelOptions = {},
): Promise<ReplyStream> {
  signal.throwIfAborted();
  const recordLatency = timeUpstream();
  const body = completionBody(messages, model, true);
  const exchange = new Exchange(endpoint, '/chat/completions', body, openAiConfig.timeoutMs, signal);
  let response: IncomingMessage;
  try {
    response = await open(exchange, true);
  } catch (error) {
    exchange.finish();
    recordLatency();
    throw signal.aborted ? signal.reason : failure(error, exchange);
  }
  exchange.progressed();
  response.setEncoding('utf8');
  return new Reply(exchange, response, signal, recordLatency);
}

/**
 * The `ReplyStream` of one exchange: the events come from `replyEvents`, and the exchange is ended
 * exactly once, by whichever comes first: the generator stopping (read to the end, failed, or
 * left) or the caller leaving, which may come before the generator has even started (and so
 * could not run its `finally`).
 */
class Reply implements ReplyStream {
  /** The caller left the stream before its end. */
  cancelled = false;
  private readonly events: AsyncGenerator<StreamEvent, void>;
  private ended = false;

  constructor(
    private readonly exchange: Exchange,
    private readonly response: IncomingMessage,
    signal: AbortSignal,
    /** Records the exchange's latency in its request's record, however late it ends. */
    private readonly recordLatency: () => void,
  ) {
    this.events = replyEvents(this, exchange, response, signal);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<StreamEvent>> {
    return this.events.next();
  }

  return(): Promise<IteratorResult<StreamEvent>> {
    this.cancelled = true;
    this.end(false);
    return this.events.return();
  }

  /** Leaves the stream as `return()` does, then rejects with the caller's `error`, as it is. */
  async throw(error?: unknown): Promise<IteratorResult<StreamEvent>> {
    await this.return();
    throw error;
  }

  cancel(): void {
    this.return().catch(() => undefined);
  }

  /**
   * Ends the exchange, once. When the reply has been read to its end (`read`), or its body has all
   * arrived, the rest of the body is let run out so the connection can be used again; otherwise
   * the upstream request is dropped.
   */
  end(read: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (read || this.response.complete) this.exchange.release(this.response);
    else this.exchange.cancel();
    this.recordLatency();
  }
}

interface CompletionChunk {
  readonly error?: { readonly message?: unknown };
  readonly choices?: readonly {
    readonly delta?: { readonly content?: string | null } | null;
    readonly finish_reason?: string | null;
  }[];
  readonly usage?: UpstreamUsage | null;
}

/**
 * The events of a streamed reply, read until `[DONE]` or the end of the body. Reading stops at
 * `[DONE]`: a compatible server that leaves the response open after it still gives a complete reply
 * (the rest of the body is left to `Reply.end`).
 */
async function* replyEvents(
  reply: Reply,
  exchange: Exchange,
  response: IncomingMessage,
  signal: AbortSignal,
): AsyncGenerator<StreamEvent, void> {
  const decoder = new SseDecoder();
  const events: string[] = [];
  let usage: UpstreamUsage | null | undefined;
  let finished = false;
  let read = false;
  try {
    // Leaving this loop must not destroy the response: after [DONE] its connection may be reused.
    reading: for await (const text of response.iterator({ destroyOnReturn: false })) {
      exchange.progressed();
      decoder.push(text as string, events);
      for (let i = 0; i < events.length; i += 1) {
        const data = events[i] as string;
        if (data === '') continue;
        if (data.startsWith('[DONE]')) break reading;
        const chunk = parseChunk(data);
        const choice = chunk.choices?.[0];
        const content = choice?.delta?.content;
        if (content) yield { type: 'delta', content };
        if (choice?.finish_reason) finished = true;
        usage = chunk.usage ?? usage;
      }
      events.length = 0;
    }
    read = true;
  } catch (error) {
    // The caller left while a read was pending: that read just ends.
    if (reply.cancelled) return;
    if (signal.aborted) throw signal.reason;
    if (error instanceof ChatProxyError || exchange.timedOut) throw failure(error, exchange);
    // The connection was cut mid-reply.
    throw new UpstreamError('upstream_incomplete', 'OpenAI ended the reply before it was complete', {
      cause: error,
    });
  } finally {
    reply.end(read);
  }
  if (signal.aborted) throw signal.reason;
  if (exchange.timedOut) throw new UpstreamTimeoutError();
  // A cut connection can look like a short stream: only a finish reason says the reply is complete.
  if (!finished)
    throw new UpstreamError('upstream_incomplete', 'OpenAI ended the reply before it was complete');
  const replyTokens = replyTokensOf(usage);
  yield { type: 'end', tokens: tokensOf(usage), ...(replyTokens === undefined ? {} : { replyTokens }) };
}

/** One streamed event's JSON; an error OpenAI reports mid-stream ends the reply. */
function parseChunk(data: string): CompletionChunk {
  let chunk: CompletionChunk | null;
  try {
    chunk = JSON.parse(data) as CompletionChunk | null;
  } catch (error) {
    throw invalidResponse('OpenAI sent a stream event that is not JSON', error);
  }
  if (chunk === null || typeof chunk !== 'object')
    throw invalidResponse('OpenAI sent an unexpected stream event');
  if (chunk.error) {
    const reason = typeof chunk.error.message === 'string' ? `: ${chunk.error.message.slice(0, 500)}` : '';
    throw new UpstreamError('upstream_error', `OpenAI failed during the reply${reason}`);
  }
  return chunk;
}

/** OpenAI moderation of one text, answered as OpenAI gives it. */
export async function moderate(input: string): Promise<ModerationResult> {
  const body = `{"model":${JSON.stringify(openAiConfig.moderationModel)},"input":${JSON.stringify(input)}}`;
  const answer = await post('/moderations', Buffer.from(body));
  if (answer === null || typeof answer !== 'object')
    throw invalidResponse('OpenAI answered without a result');
  const { id, model, results } = answer as Partial<ModerationResult>;
  if (typeof id !== 'string' || typeof model !== 'string' || !Array.isArray(results))
    throw invalidResponse('OpenAI answered without a result');
  return { id, model, results };
}
