import { Period } from 'aws-cdk-lib/aws-apigateway';
import type { Node } from 'constructs';
import { APP_USER_ACCESS_STRING } from './store-access';

/**
 * The deployment settings, read from CDK context (`cdk.json` or `cdk deploy -c key=value`). This is
 * the only module that reads context; constructs get these values as typed props.
 */
export interface StackConfig {
  /**
   * Chat model the functions call.
   * @default 'gpt-4.1-mini'
   */
  readonly openAiModel: string;
  /**
   * Moderation model for `POST /mod`.
   * @default - the functions' own default
   */
  readonly openAiModerationModel: string | undefined;
  /**
   * Complete ARN of an existing secret holding the OpenAI API key.
   * @default - the stack creates the secret
   */
  readonly openAiSecretArn: string | undefined;
  /**
   * Complete ARN of an existing secret holding the Redis URL.
   * @default - the stack creates the secret
   */
  readonly redisSecretArn: string | undefined;
  /**
   * API Gateway stage, the last segment of the API URL.
   * @default 'prod'
   */
  readonly stageName: string;
  /**
   * One API key (one tenant) per name.
   * @default ['default']
   */
  readonly apiKeys: readonly string[];
  /**
   * Steady-state requests per second, per API key.
   * @default 10
   */
  readonly throttleRateLimit: number;
  /**
   * Requests allowed in a burst, per API key.
   * @default 20
   */
  readonly throttleBurstLimit: number;
  /**
   * Requests per `quotaPeriod`, per API key.
   * @default 10000
   */
  readonly quotaLimit: number;
  /**
   * @default Period.DAY
   */
  readonly quotaPeriod: Period;
  /**
   * Where chats are kept: `external` reads a Redis URL from a secret (Upstash, Redis Cloud, your own);
   * `provisioned` creates a MemoryDB cluster in a new VPC and runs the Redis functions in it.
   * @default 'external'
   */
  readonly storage: StorageMode;
  /**
   * With `storage: 'external'`: the Redis behind the URL is a cluster (Redis Cluster, ElastiCache or
   * MemoryDB in cluster mode), so the functions use a cluster client. Provisioned storage always is.
   * @default false
   */
  readonly redisCluster: boolean;
  /** The MemoryDB cluster of `storage: 'provisioned'`; ignored otherwise. */
  readonly memoryDb: MemoryDbSettings;
  /**
   * NAT gateways of the VPC that `storage: 'provisioned'` creates: 2 keeps OpenAI reachable when an
   * Availability Zone fails, 1 halves the NAT cost.
   * @default 2
   */
  readonly natGateways: number;
  /**
   * Browser origins allowed to call the API (CORS); `['*']` allows any.
   * @default - none: CORS stays off
   */
  readonly corsOrigins: readonly string[] | undefined;
  /**
   * Requests per 5 minutes from one IP address above which a WAF web ACL blocks it.
   * @default - no web ACL
   */
  readonly wafRateLimit: number | undefined;
  /**
   * An e-mail address to subscribe to the alarms' SNS topic.
   * @default - no topic: alarms only show in the console
   */
  readonly alarmEmail: string | undefined;
  /** How chats behave: models, context budget, retention, sampling. */
  readonly chat: ChatSettings;
}

/** The functions' chat settings, from context keys, each becoming one environment variable. */
export interface ChatSettings {
  /**
   * Models a chat may choose with its `model` setting, besides `openAiModel` (`OPENAI_MODELS`).
   * @default - only `openAiModel`
   */
  readonly models: readonly string[] | undefined;
  /**
   * Token budget of a turn's prompt (`MAX_CONTEXT_TOKENS`).
   * @default - the model's context size minus the reply reserve
   */
  readonly maxContextTokens: number | undefined;
  /**
   * Days a chat is kept after its last write (`CHAT_TTL_DAYS`).
   * @default - kept until deleted
   */
  readonly ttlDays: number | undefined;
  /**
   * Sampling temperature (`OPENAI_TEMPERATURE`).
   * @default - OpenAI's default
   */
  readonly temperature: number | undefined;
  /**
   * Most tokens of a reply (`OPENAI_MAX_TOKENS`).
   * @default - OpenAI's default
   */
  readonly maxTokens: number | undefined;
  /**
   * Log message contents (`LOG_CONTENT`), for debugging only.
   * @default false
   */
  readonly logContent: boolean;
}

export type StorageMode = 'external' | 'provisioned';

/** Size of the MemoryDB cluster, from the `memoryDb*` context keys. */
export interface MemoryDbSettings {
  /**
   * @default 'db.t4g.small'
   */
  readonly nodeType: string;
  /**
   * @default 1
   */
  readonly shards: number;
  /**
   * Replicas per shard, each in another Availability Zone; 0 leaves no node to fail over to.
   * @default 1
   */
  readonly replicasPerShard: number;
  /**
   * The functions' user's access string (`memoryDbAccessString`).
   * @default APP_USER_ACCESS_STRING: only the commands the functions send, on their keys
   */
  readonly accessString: string;
}

export class StackConfigError extends Error {
  override readonly name = 'StackConfigError';

  constructor(key: string, expected: string, got: unknown) {
    super(`Invalid CDK context "${key}": expected ${expected}, got ${JSON.stringify(got)}`);
  }
}

/** The stack's name when the context sets none. */
export const DEFAULT_STACK_NAME = 'ChatProxy';
/** That stack's metrics `service` dimension (the functions' own default too); see appMetrics. */
export const DEFAULT_METRICS_SERVICE = 'chat-proxy';

/**
 * The CloudFormation stack's name (context `stackName`): another name deploys another, separate
 * copy (say `ChatProxy-staging`) beside the first in the same account and Region. It also names the
 * API, its keys, the alarms, the dashboard and the metrics' `service` dimension. Read by the app,
 * which names the stack before the stack reads the rest.
 */
export function readStackName(node: Node): string {
  const value: unknown = node.tryGetContext('stackName');
  if (value === undefined || value === null || (typeof value === 'string' && value.trim() === '')) {
    return DEFAULT_STACK_NAME;
  }
  // CloudFormation allows 128 characters; the names built from it (API keys, alarms, MemoryDB)
  // need room for their suffixes.
  // The default stack's metrics service is no name for another stack: it would share its
  // metrics and alarms.
  if (
    typeof value !== 'string' ||
    !/^[A-Za-z][A-Za-z0-9-]{0,63}$/.test(value) ||
    value === DEFAULT_METRICS_SERVICE
  ) {
    throw new StackConfigError(
      'stackName',
      'a letter, then letters, digits and "-" (1-64 characters), other than "chat-proxy"',
      value,
    );
  }
  return value;
}

/** Reads and validates every context key the stack uses; throws a StackConfigError naming the bad key. */
export function readStackConfig(node: Node): StackConfig {
  // `-c key=value` on the command line always yields a string, cdk.json yields typed JSON: accept both.
  const raw = (key: string): unknown => {
    const value: unknown = node.tryGetContext(key);
    return typeof value === 'string' && value.trim() === '' ? undefined : value;
  };

  const apiKeys = listOf(raw('apiKeys'), 'apiKeys') ?? ['default'];
  validateApiKeyNames(apiKeys);

  const storage = storageMode(raw('storage'), 'storage') ?? 'external';
  const redisSecretArn = secretArn(raw('redisSecretArn'), 'redisSecretArn');
  if (storage === 'provisioned' && redisSecretArn !== undefined) {
    throw new StackConfigError(
      'redisSecretArn',
      'no value with storage "provisioned", whose Redis URL secret the stack creates',
      redisSecretArn,
    );
  }

  return {
    openAiModel: modelName(raw('openAiModel'), 'openAiModel') ?? 'gpt-4.1-mini',
    openAiModerationModel: modelName(raw('openAiModerationModel'), 'openAiModerationModel'),
    openAiSecretArn: secretArn(raw('openAiSecretArn'), 'openAiSecretArn'),
    redisSecretArn,
    stageName: stageName(raw('stageName'), 'stageName') ?? 'prod',
    apiKeys,
    throttleRateLimit: numberIn(raw('throttleRateLimit'), 'throttleRateLimit', { min: 0.001 }) ?? 10,
    throttleBurstLimit:
      numberIn(raw('throttleBurstLimit'), 'throttleBurstLimit', { min: 1, integer: true }) ?? 20,
    quotaLimit: numberIn(raw('quotaLimit'), 'quotaLimit', { min: 1, integer: true }) ?? 10_000,
    quotaPeriod: period(raw('quotaPeriod'), 'quotaPeriod') ?? Period.DAY,
    storage,
    redisCluster: flag(raw('redisCluster'), 'redisCluster') ?? false,
    memoryDb: {
      nodeType: memoryDbNodeType(raw('memoryDbNodeType'), 'memoryDbNodeType') ?? 'db.t4g.small',
      shards: numberIn(raw('memoryDbShards'), 'memoryDbShards', { min: 1, max: 500, integer: true }) ?? 1,
      replicasPerShard:
        numberIn(raw('memoryDbReplicasPerShard'), 'memoryDbReplicasPerShard', {
          min: 0,
          max: 5,
          integer: true,
        }) ?? 1,
      accessString:
        accessString(raw('memoryDbAccessString'), 'memoryDbAccessString') ?? APP_USER_ACCESS_STRING,
    },
    natGateways: numberIn(raw('natGateways'), 'natGateways', { min: 1, max: 2, integer: true }) ?? 2,
    corsOrigins: origins(raw('corsOrigins'), 'corsOrigins'),
    wafRateLimit: numberIn(raw('wafRateLimit'), 'wafRateLimit', {
      min: 10,
      max: 2_000_000_000,
      integer: true,
    }),
    alarmEmail: email(raw('alarmEmail'), 'alarmEmail'),
    chat: {
      models: listOf(raw('openAiModels'), 'openAiModels')?.map(
        (model) => modelName(model, 'openAiModels') as string,
      ),
      maxContextTokens: numberIn(raw('maxContextTokens'), 'maxContextTokens', {
        min: 100,
        max: 10_000_000,
        integer: true,
      }),
      ttlDays: numberIn(raw('chatTtlDays'), 'chatTtlDays', { min: 0.00001, max: 3650 }),
      temperature: numberIn(raw('openAiTemperature'), 'openAiTemperature', { min: 0, max: 2 }),
      maxTokens: numberIn(raw('openAiMaxTokens'), 'openAiMaxTokens', {
        min: 1,
        max: 1_000_000,
        integer: true,
      }),
      logContent: flag(raw('logContent'), 'logContent') ?? false,
    },
  };
}

function flag(value: unknown, key: string): boolean | undefined {
  if (value === undefined || value === null) return undefined;
  if (value === true || value === 'true') return true;
  if (value === false || value === 'false') return false;
  throw new StackConfigError(key, 'true or false', value);
}

/**
 * The part of a CloudFormation logical id derived from an API key name: logical ids keep only
 * letters and digits, so two names that differ only in `-` or `_` would collide.
 */
export function apiKeyLogicalName(name: string): string {
  const alphanumeric = name.replace(/[^A-Za-z0-9]/g, '');
  return alphanumeric.charAt(0).toUpperCase() + alphanumeric.slice(1);
}

function modelName(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || !/^[A-Za-z0-9._:/-]{1,128}$/.test(value.trim())) {
    throw new StackConfigError(key, 'a model name such as "gpt-4.1-mini"', value);
  }
  return value.trim();
}

function secretArn(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  // A partial ARN (without the random suffix) would make the IAM grant miss the secret, so only the
  // complete ARN is accepted.
  const complete =
    /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$/;
  if (typeof value !== 'string' || !complete.test(value.trim())) {
    throw new StackConfigError(
      key,
      'the complete ARN of a Secrets Manager secret, ending in "-" and 6 characters ' +
        '(aws secretsmanager describe-secret --secret-id NAME --query ARN)',
      value,
    );
  }
  return value.trim();
}

/**
 * A MemoryDB access string: rules separated by spaces, starting with `on`, without `reset` or a
 * password (MemoryDB refuses both; the password is the stack's).
 */
function accessString(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  const rules = typeof value === 'string' ? value.trim().split(/\s+/) : [];
  // ACL rules are case-insensitive; resetkeys and resetchannels are fine, reset and resetpass not.
  const refused = (rule: string) => /^(reset|resetpass|nopass)$/i.test(rule) || /^[<>#!]/.test(rule);
  if (rules[0]?.toLowerCase() !== 'on' || rules.some(refused) || String(value).length > 2048) {
    throw new StackConfigError(
      key,
      'an access string starting with "on", without "reset" or a password',
      value,
    );
  }
  return rules.join(' ');
}

function stageName(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]{1,128}$/.test(value)) {
    throw new StackConfigError(key, 'letters, digits, "-" and "_" (1-128 characters)', value);
  }
  return value;
}

function listOf(value: unknown, key: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  let list: unknown = value;
  if (typeof value === 'string') {
    try {
      list = value.trim().startsWith('[') ? JSON.parse(value) : value.split(',');
    } catch {
      throw new StackConfigError(key, 'a JSON array of names or a comma-separated list', value);
    }
  }
  if (!Array.isArray(list) || list.length === 0 || !list.every((item) => typeof item === 'string')) {
    throw new StackConfigError(key, 'a non-empty list of names, e.g. ["default"] or "a,b"', value);
  }
  return list.map((item: string) => item.trim());
}

function validateApiKeyNames(names: readonly string[]): void {
  const seen = new Map<string, string>();
  for (const name of names) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(name)) {
      throw new StackConfigError(
        'apiKeys',
        'names of letters, digits, "-" and "_" (1-64, starting with a letter or digit)',
        name,
      );
    }
    const logicalName = apiKeyLogicalName(name).toLowerCase();
    const clash = seen.get(logicalName);
    if (clash !== undefined) {
      throw new StackConfigError(
        'apiKeys',
        `names that differ in more than "-", "_" or case (${clash})`,
        name,
      );
    }
    seen.set(logicalName, name);
  }
}

function numberIn(
  value: unknown,
  key: string,
  { min, max = Number.MAX_SAFE_INTEGER, integer = false }: { min: number; max?: number; integer?: boolean },
): number | undefined {
  if (value === undefined || value === null) return undefined;
  const parsed = typeof value === 'string' ? Number(value.trim()) : value;
  if (
    typeof parsed !== 'number' ||
    !Number.isFinite(parsed) ||
    parsed < min ||
    parsed > max ||
    (integer && !Number.isInteger(parsed))
  ) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
    throw new StackConfigError(key, `${integer ? 'an integer' : 'a number'} ${range}`, value);
  }
  return parsed;
}

function storageMode(value: unknown, key: string): StorageMode | undefined {
  if (value === undefined || value === null) return undefined;
  const parsed = typeof value === 'string' ? value.trim().toLowerCase() : value;
  if (parsed !== 'external' && parsed !== 'provisioned') {
    throw new StackConfigError(key, 'one of "external", "provisioned"', value);
  }
  return parsed;
}

function memoryDbNodeType(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || !/^db\.[a-z0-9-]+\.[a-z0-9]+$/.test(value.trim())) {
    throw new StackConfigError(key, 'a MemoryDB node type such as "db.t4g.small" or "db.r7g.large"', value);
  }
  return value.trim();
}

/**
 * CORS origins as a browser sends them: scheme, host and optional port, no path. A list given on
 * the command line may be comma-separated; an empty list means CORS stays off.
 */
function origins(value: unknown, key: string): string[] | undefined {
  if (value === undefined || value === null || (Array.isArray(value) && value.length === 0)) return undefined;
  const list = listOf(value, key) ?? [];
  const origin = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$/;
  for (const item of list) {
    if (item !== '*' && !origin.test(item)) {
      throw new StackConfigError(
        key,
        'origins like "https://app.example.com" (no path, no trailing /) or "*"',
        item,
      );
    }
  }
  if (list.includes('*') && list.length > 1) {
    throw new StackConfigError(key, '"*" alone or a list of origins, not both', value);
  }
  return list;
}

function email(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(value.trim())) {
    throw new StackConfigError(key, 'an e-mail address', value);
  }
  return value.trim();
}

function period(value: unknown, key: string): Period | undefined {
  if (value === undefined || value === null) return undefined;
  const periods: Record<string, Period> = { DAY: Period.DAY, WEEK: Period.WEEK, MONTH: Period.MONTH };
  const parsed = typeof value === 'string' ? periods[value.trim().toUpperCase()] : undefined;
  if (parsed === undefined) throw new StackConfigError(key, 'one of "DAY", "WEEK", "MONTH"', value);
  return parsed;
}
