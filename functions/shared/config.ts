/**
 * The one place that reads the environment. Each loader validates its variables once, when the
 * module that needs them is first imported, so a misconfigured function fails at cold start with
 * a message naming the variable instead of failing later on a request.
 */

type Env = Readonly<Record<string, string | undefined>>;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function optional(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

function decimal(env: Env, name: string, min: number, max: number): number | undefined {
  const raw = optional(env, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be a number from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

/** Exactly one of two variables, e.g. a plain value locally or a secret ARN when deployed. */
function oneOf(env: Env, plain: string, secretArn: string): { value: string } | { secretArn: string } {
  const value = optional(env, plain);
  const arn = optional(env, secretArn);
  if (value !== undefined) return { value };
  if (arn !== undefined) return { secretArn: arn };
  throw new ConfigError(`Missing configuration: set ${secretArn} (deployed) or ${plain} (local)`);
}

/** Request limits, enforced before any storage or upstream call. */
export interface Limits {
  /** Largest request body accepted, in bytes (after base64 decoding). */
  readonly maxBodyBytes: number;
  /** Longest `content` accepted, in characters. */
  readonly maxContentChars: number;
  /** Longest image `url` accepted, in characters. */
  readonly maxUrlChars: number;
  /** Longest chat id accepted; ids use `[A-Za-z0-9_-]`. */
  readonly maxChatIdLength: number;
}

export function loadLimits(env: Env = process.env): Limits {
  return {
    maxBodyBytes: integer(env, 'MAX_BODY_BYTES', 512 * 1024, 1024, 6 * 1024 * 1024),
    maxContentChars: integer(env, 'MAX_CONTENT_CHARS', 100_000, 1, 1_000_000),
    maxUrlChars: integer(env, 'MAX_URL_CHARS', 2048, 16, 32_768),
    maxChatIdLength: integer(env, 'MAX_CHAT_ID_LENGTH', 128, 1, 512),
  };
}

export interface RedisConfig {
  /** A `redis://` or `rediss://` URL, given directly or stored in a Secrets Manager secret. */
  readonly url: { value: string } | { secretArn: string };
  /** Prefix of every key this service writes, so it can share a Redis with other apps. */
  readonly keyPrefix: string;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
  /** Talk to a Redis Cluster (MemoryDB, ElastiCache cluster mode) instead of a single node. */
  readonly cluster: boolean;
}

export function loadRedisConfig(env: Env = process.env): RedisConfig {
  const keyPrefix = optional(env, 'REDIS_KEY_PREFIX') ?? 'chat-proxy';
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(keyPrefix)) {
    throw new ConfigError('REDIS_KEY_PREFIX may hold only letters, digits, "_", "." and "-" (1-64)');
  }
  return {
    url: oneOf(env, 'REDIS_URL', 'REDIS_SECRET_ARN'),
    keyPrefix,
    connectTimeoutMs: integer(env, 'REDIS_CONNECT_TIMEOUT_MS', 900, 50, 30_000),
    commandTimeoutMs: integer(env, 'REDIS_COMMAND_TIMEOUT_MS', 1500, 50, 30_000),
    cluster: optional(env, 'REDIS_CLUSTER') === 'true',
  };
}

export interface OpenAiConfig {
  readonly apiKey: { value: string } | { secretArn: string };
  /** Any OpenAI-compatible endpoint; unset, OpenAI's own (the default lives in `openai.ts`). */
  readonly baseURL: string | undefined;
  readonly model: string;
  readonly moderationModel: string;
  readonly temperature: number | undefined;
  readonly maxTokens: number | undefined;
  /**
   * A buffered call's one deadline, over all its attempts and the waits between them, up to the last
   * byte of the answer. A streamed reply has the same deadline until OpenAI answers with its status;
   * after that it is the longest silence allowed between chunks. Buffered replies must finish under
   * API Gateway's 29 s integration timeout, hence 25 s and no retry by default.
   */
  readonly timeoutMs: number;
  readonly maxRetries: number;
}

export function loadOpenAiConfig(env: Env = process.env): OpenAiConfig {
  const maxTokens = optional(env, 'OPENAI_MAX_TOKENS');
  return {
    apiKey: oneOf(env, 'OPENAI_API_KEY', 'OPENAI_SECRET_ARN'),
    baseURL: optional(env, 'OPENAI_BASE_URL'),
    model: optional(env, 'OPENAI_MODEL') ?? 'gpt-4.1-mini',
    moderationModel: optional(env, 'OPENAI_MODERATION_MODEL') ?? 'omni-moderation-latest',
    temperature: decimal(env, 'OPENAI_TEMPERATURE', 0, 2),
    maxTokens: maxTokens === undefined ? undefined : integer(env, 'OPENAI_MAX_TOKENS', 0, 1, 1_000_000),
    timeoutMs: integer(env, 'OPENAI_TIMEOUT_MS', 25_000, 100, 900_000),
    maxRetries: integer(env, 'OPENAI_MAX_RETRIES', 0, 0, 5),
  };
}

export interface SecretsConfig {
  /** How long a secret value is reused before it is read again. */
  readonly cacheTtlMs: number;
}

export function loadSecretsConfig(env: Env = process.env): SecretsConfig {
  return { cacheTtlMs: integer(env, 'SECRET_CACHE_TTL_MS', 5 * 60_000, 0, 24 * 3600_000) };
}

/**
 * `sam local start-api` (which sets AWS_SAM_LOCAL) does not check API keys and passes no key id,
 * so there the tenant is derived from the x-api-key header instead. Never set in AWS.
 */
export function isSamLocal(env: Env = process.env): boolean {
  return optional(env, 'AWS_SAM_LOCAL') === 'true';
}

export interface StreamingConfig {
  /** Longest silence on a streamed reply before a `: keep-alive` comment goes out. */
  readonly keepAliveMs: number;
}

export function loadStreamingConfig(env: Env = process.env): StreamingConfig {
  return { keepAliveMs: integer(env, 'STREAM_KEEPALIVE_MS', 15_000, 10, 60_000) };
}

export interface TurnConfig {
  /**
   * How long a turn holds its chat. A buffered turn must finish within it (it covers the OpenAI
   * deadline); a streamed turn renews it as it goes. A dead function's lease simply expires.
   */
  readonly leaseMs: number;
  /** How long an Idempotency-Key's answer is kept for replay. */
  readonly idempotencyTtlSeconds: number;
}

export function loadTurnConfig(env: Env = process.env): TurnConfig {
  const openAiTimeoutMs = integer(env, 'OPENAI_TIMEOUT_MS', 25_000, 100, 900_000);
  return {
    leaseMs: integer(env, 'TURN_LEASE_MS', openAiTimeoutMs + 5000, 100, 900_000),
    idempotencyTtlSeconds: integer(env, 'IDEMPOTENCY_TTL_SECONDS', 24 * 3600, 1, 7 * 24 * 3600),
  };
}

/**
 * Context window sizes of the chat models we know, in tokens. A model not listed is assumed to
 * have 128k; set MAX_CONTEXT_TOKENS (or a chat's max_context_tokens) for anything else.
 */
export const MODEL_CONTEXT_TOKENS: Readonly<Record<string, number>> = {
  'gpt-4o': 128_000,
  'gpt-4o-mini': 128_000,
  'gpt-4.1': 1_047_576,
  'gpt-4.1-mini': 1_047_576,
  'gpt-4.1-nano': 1_047_576,
  'gpt-5': 400_000,
  'gpt-5-mini': 400_000,
  'gpt-5-nano': 400_000,
};
export const FALLBACK_CONTEXT_TOKENS = 128_000;

export interface ChatConfig {
  /** The model of a chat with no `model` setting (OPENAI_MODEL). */
  readonly defaultModel: string;
  /** Models a chat may choose; always includes the default. */
  readonly models: readonly string[];
  /** The deployment's context budget; unset means the model's context size minus the reply reserve. */
  readonly maxContextTokens: number | undefined;
  /** Tokens kept free for the reply when the budget comes from the model's context size. */
  readonly replyReserveTokens: number;
  /** Days a chat lives after its last write (fractions allowed); unset keeps chats until deleted. */
  readonly ttlDays: number | undefined;
  /** The size a history page stays under when the client gives no `limit`. */
  readonly maxPageBytes: number;
}

export function loadChatConfig(env: Env = process.env): ChatConfig {
  const defaultModel = optional(env, 'OPENAI_MODEL') ?? 'gpt-4.1-mini';
  const listed = (optional(env, 'OPENAI_MODELS') ?? '')
    .split(',')
    .map((model) => model.trim())
    .filter((model) => model !== '');
  const maxContext = optional(env, 'MAX_CONTEXT_TOKENS');
  const ttlDays = optional(env, 'CHAT_TTL_DAYS');
  const maxTokens = optional(env, 'OPENAI_MAX_TOKENS');
  return {
    defaultModel,
    models: [...new Set([defaultModel, ...listed])],
    maxContextTokens:
      maxContext === undefined ? undefined : integer(env, 'MAX_CONTEXT_TOKENS', 0, 100, 10_000_000),
    replyReserveTokens: integer(
      env,
      'REPLY_RESERVE_TOKENS',
      maxTokens === undefined ? 4096 : integer(env, 'OPENAI_MAX_TOKENS', 0, 1, 1_000_000),
      0,
      1_000_000,
    ),
    ttlDays: ttlDays === undefined ? undefined : decimal(env, 'CHAT_TTL_DAYS', 0.00001, 3650),
    maxPageBytes: integer(env, 'MAX_PAGE_BYTES', 1024 * 1024, 1024, 5 * 1024 * 1024),
  };
}

export interface ObservabilityConfig {
  /** Log message contents too (debugging only): off by default, so no conversation reaches the logs. */
  readonly logContent: boolean;
  /** POWERTOOLS_METRICS_DISABLED=true (tests, local runs): no metric is even computed. */
  readonly metricsDisabled: boolean;
  /**
   * POWERTOOLS_SERVICE_NAME: the `service` of every log line and the `service` dimension of every
   * metric, which the stack's alarms read (it names each stack's own).
   */
  readonly serviceName: string;
  /** POWERTOOLS_METRICS_NAMESPACE: the metrics' CloudWatch namespace. */
  readonly metricsNamespace: string;
}

export function loadObservabilityConfig(env: Env = process.env): ObservabilityConfig {
  return {
    logContent: optional(env, 'LOG_CONTENT') === 'true',
    metricsDisabled: optional(env, 'POWERTOOLS_METRICS_DISABLED') === 'true',
    serviceName: optional(env, 'POWERTOOLS_SERVICE_NAME') ?? 'chat-proxy',
    metricsNamespace: optional(env, 'POWERTOOLS_METRICS_NAMESPACE') ?? 'ChatProxy',
  };
}

export interface CorsConfig {
  /** Origins allowed to call from a browser ('*' for any); empty: no CORS headers. */
  readonly allowedOrigins: readonly string[];
}

export function loadCorsConfig(env: Env = process.env): CorsConfig {
  const listed = optional(env, 'CORS_ALLOWED_ORIGINS') ?? '';
  return {
    allowedOrigins: listed
      .split(',')
      .map((origin) => origin.trim())
      .filter((origin) => origin !== ''),
  };
}
