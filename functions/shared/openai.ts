import OpenAI from 'openai';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { loadOpenAiConfig } from './config';
import {
  ChatProxyError,
  UpstreamError,
  UpstreamRateLimitedError,
  UpstreamRejectedError,
  UpstreamTimeoutError,
} from './errors';
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

async function call<T>(request: (openai: OpenAI) => Promise<T>): Promise<T> {
  try {
    return await request(await getClient(false));
  } catch (error) {
    if (!(error instanceof OpenAI.AuthenticationError) || 'value' in openAiConfig.apiKey)
      throw toChatProxyError(error);
  }
  try {
    return await request(await getClient(true));
  } catch (error) {
    throw toChatProxyError(error);
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
export async function complete(messages: ChatCompletionMessageParam[]): Promise<Completion> {
  const completion = await call((openai) =>
    openai.chat.completions.create({
      model: openAiConfig.model,
      messages,
      ...(openAiConfig.temperature === undefined ? {} : { temperature: openAiConfig.temperature }),
      ...(openAiConfig.maxTokens === undefined ? {} : { max_completion_tokens: openAiConfig.maxTokens }),
    }),
  );
  const message = completion.choices?.[0]?.message;
  if (message === undefined) {
    throw new UpstreamError('upstream_invalid_response', 'OpenAI answered without a message');
  }
  const usage = completion.usage;
  return {
    content: message.content ?? message.refusal ?? '',
    tokens: {
      completion_tokens: usage?.completion_tokens ?? 0,
      prompt_tokens: usage?.prompt_tokens ?? 0,
      total_tokens: usage?.total_tokens ?? 0,
    },
  };
}

/** OpenAI moderation of one text, answered as OpenAI gives it. */
export async function moderate(input: string): Promise<ModerationResult> {
  const { id, model, results } = await call((openai) =>
    openai.moderations.create({ model: openAiConfig.moderationModel, input }),
  );
  return { id, model, results };
}
