import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { redisConfig, withRedis } from './redis';

/** A message as OpenAI's chat API takes it; image turns carry content parts. */
export type MessageContent =
  | string
  | ReadonlyArray<{ type: 'text'; text: string } | { type: 'image_url'; image_url: { url: string } }>;

export interface ChatMessage {
  readonly role: 'user' | 'assistant';
  readonly content: MessageContent;
}

/** One chat of one tenant. Both parts are validated ids (`[A-Za-z0-9_-]`). */
export interface ChatRef {
  readonly tenant: string;
  readonly chatId: string;
}

/** What a turn reads before calling the model. */
export interface TurnContext {
  readonly globalSystemPrompt: string | null;
  readonly chatSystemPrompt: string | null;
  readonly history: ChatMessage[];
}

/** The right to run one turn on a chat: held in Redis until committed, released or expired. */
export interface TurnLease {
  /** Random per turn; only its holder may write the turn or renew the lease. */
  readonly token: string;
  /** The chat's generation when the turn began; a clear in between makes the commit a no-op. */
  readonly generation: string;
  readonly context: TurnContext;
}

export type BeginTurnResult =
  | { readonly acquired: true; readonly lease: TurnLease }
  | {
      readonly acquired: false /** How long the current holder's lease still runs. */;
      readonly retryInMs: number;
    };

/** `stored`, or why not: the lease ran out (someone else may hold the chat), or the chat was cleared. */
export type CommitResult = 'stored' | 'lease_lost' | 'cleared';

/** An idempotency record, scoped to one tenant (and chat) and one route. */
export type IdempotencyClaim =
  | { readonly state: 'claimed' }
  | { readonly state: 'running' }
  | { readonly state: 'mismatch' }
  | { readonly state: 'done'; readonly response: StoredResponse };

/** A response kept for replay. */
export interface StoredResponse {
  readonly statusCode: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Where an idempotency record lives: a chat's records go with the chat. */
export type IdempotencyScope = { readonly tenant: string; readonly chatId?: string };

export interface ChatRepository {
  getGlobalSystemPrompt(tenant: string): Promise<string | null>;
  setGlobalSystemPrompt(tenant: string, content: string): Promise<void>;
  getChatSystemPrompt(chat: ChatRef): Promise<string | null>;
  setChatSystemPrompt(chat: ChatRef, content: string): Promise<void>;
  /** Every message of the chat, oldest first. */
  getMessages(chat: ChatRef): Promise<ChatMessage[]>;
  /** Takes the chat's turn lease, if free, and reads what the turn needs, in one round trip. */
  beginTurn(chat: ChatRef, leaseMs: number): Promise<BeginTurnResult>;
  /**
   * Appends the user message and its reply together (both or neither) and releases the lease,
   * only if the lease is still this turn's and the chat was not cleared since it began.
   */
  commitTurn(
    chat: ChatRef,
    lease: TurnLease,
    user: ChatMessage,
    assistant: ChatMessage,
  ): Promise<CommitResult>;
  /** Extends a lease still held; false once it was lost. */
  renewLease(chat: ChatRef, lease: TurnLease, leaseMs: number): Promise<boolean>;
  /** Gives a lease back early (the turn failed). */
  releaseLease(chat: ChatRef, lease: TurnLease): Promise<void>;
  /** Deletes the chat's messages; its system prompt stays. Turns in flight will not be stored. */
  clearMessages(chat: ChatRef): Promise<void>;
  /** Claims an idempotency key for a request with this body fingerprint, or reports its state. */
  claimIdempotency(
    scope: IdempotencyScope,
    id: string,
    fingerprint: string,
    runningMs: number,
  ): Promise<IdempotencyClaim>;
  /** Keeps the response of a claimed key for replay. */
  completeIdempotency(
    scope: IdempotencyScope,
    id: string,
    response: StoredResponse,
    keepSeconds: number,
  ): Promise<void>;
  /** Drops a claim whose request failed, so a retry runs again. */
  abandonIdempotency(scope: IdempotencyScope, id: string): Promise<void>;
}

const SAFE_ID = /^[A-Za-z0-9_-]{1,512}$/;

function safe(id: string): string {
  // Ids are validated at the edge; this guards the key layout itself, so no caller can ever
  // produce a key that reaches into another tenant's or chat's space.
  if (!SAFE_ID.test(id)) throw new Error('Unsafe id reached the chat repository');
  return id;
}

/**
 * The Redis key layout, and the only place that knows it:
 *
 *   {prefix}:{t:<tenant>}:system              string   the tenant's global system prompt
 *   {prefix}:{t:<tenant>}:idem:<sha256>       string   idempotency record of a tenant route
 *   {prefix}:{c:<tenant>:<chat>}:system       string   the chat's system prompt
 *   {prefix}:{c:<tenant>:<chat>}:messages     list     JSON messages, oldest first
 *   {prefix}:{c:<tenant>:<chat>}:meta         hash     gen (bumped by clear), created_at, updated_at
 *   {prefix}:{c:<tenant>:<chat>}:lease        string   the running turn's token, with an expiry
 *   {prefix}:{c:<tenant>:<chat>}:idem:<sha256> string  idempotency record of a chat route
 *
 * The braces are Redis Cluster hash tags: every key of one chat lands in one slot, so the Lua
 * scripts below that touch several keys of a chat stay valid on a cluster, while different chats
 * spread over the slots.
 */
export const keys = {
  tenant: (tenant: string) => {
    const base = `${redisConfig.keyPrefix}:{t:${safe(tenant)}}`;
    return { system: `${base}:system`, idempotency: (id: string) => `${base}:idem:${safe(id)}` };
  },
  chat: (chat: ChatRef) => {
    const base = `${redisConfig.keyPrefix}:{c:${safe(chat.tenant)}:${safe(chat.chatId)}}`;
    return {
      system: `${base}:system`,
      messages: `${base}:messages`,
      meta: `${base}:meta`,
      lease: `${base}:lease`,
      idempotency: (id: string) => `${base}:idem:${safe(id)}`,
    };
  },
};

function idempotencyKey(scope: IdempotencyScope, id: string): string {
  return scope.chatId === undefined
    ? keys.tenant(scope.tenant).idempotency(id)
    : keys.chat({ tenant: scope.tenant, chatId: scope.chatId }).idempotency(id);
}

interface StoredMessage extends ChatMessage {
  /** Milliseconds since the epoch, when the turn was stored. */
  readonly created_at: number;
}

function decode(raw: string): ChatMessage {
  const { role, content } = JSON.parse(raw) as StoredMessage;
  return { role, content };
}

function encode(message: ChatMessage, createdAt: number): string {
  const stored: StoredMessage = { role: message.role, content: message.content, created_at: createdAt };
  return JSON.stringify(stored);
}

/**
 * The scripts that make a turn safe. Each runs atomically in Redis, on keys of one chat only.
 *
 * beginTurn   KEYS lease meta system messages   ARGV token leaseMs
 *   -> {0, pttl} when another turn holds the lease; else takes it and returns
 *      {1, generation, messages, chatSystemPrompt?}
 * commitTurn  KEYS lease meta messages          ARGV token generation now user assistant
 *   -> 'lease_lost' unless the lease is still ours; 'cleared' if the generation moved; else
 *      appends both messages, releases the lease and returns 'stored'
 */
const scripts = {
  beginTurn: {
    numberOfKeys: 4,
    lua: `
      local holder = redis.call('GET', KEYS[1])
      if holder and holder ~= ARGV[1] then return {0, redis.call('PTTL', KEYS[1])} end
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
      local generation = redis.call('HGET', KEYS[2], 'gen') or '0'
      return {1, generation, redis.call('LRANGE', KEYS[4], 0, -1), redis.call('GET', KEYS[3])}`,
  },
  commitTurn: {
    numberOfKeys: 3,
    lua: `
      if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lease_lost' end
      redis.call('DEL', KEYS[1])
      if (redis.call('HGET', KEYS[2], 'gen') or '0') ~= ARGV[2] then return 'cleared' end
      redis.call('RPUSH', KEYS[3], ARGV[4], ARGV[5])
      redis.call('HSETNX', KEYS[2], 'created_at', ARGV[3])
      redis.call('HSET', KEYS[2], 'updated_at', ARGV[3])
      return 'stored'`,
  },
  renewLease: {
    numberOfKeys: 1,
    lua: `
      if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
      return redis.call('PEXPIRE', KEYS[1], ARGV[2])`,
  },
  releaseLease: {
    numberOfKeys: 1,
    lua: `
      if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
      return 0`,
  },
  clearMessages: {
    numberOfKeys: 2,
    lua: `
      redis.call('DEL', KEYS[2])
      return redis.call('HINCRBY', KEYS[1], 'gen', 1)`,
  },
  claimIdempotency: {
    numberOfKeys: 1,
    lua: `
      local record = redis.call('GET', KEYS[1])
      if not record then
        redis.call('SET', KEYS[1], cjson.encode({state = 'running', fingerprint = ARGV[1]}), 'PX', ARGV[2])
        return 'claimed'
      end
      return record`,
  },
  completeIdempotency: {
    numberOfKeys: 1,
    lua: `
      local record = redis.call('GET', KEYS[1])
      if not record then return 0 end
      local fingerprint = cjson.decode(record).fingerprint
      redis.call('SET', KEYS[1], cjson.encode({state = 'done', fingerprint = fingerprint, response = ARGV[1]}), 'EX', ARGV[2])
      return 1`,
  },
} as const;

type ScriptName = keyof typeof scripts;
type Scripted = Redis & { [name in ScriptName]: (...args: (string | number)[]) => Promise<unknown> };

const prepared = new WeakSet<Redis>();

/** Registers the scripts on a connection once; ioredis then calls them by SHA (EVALSHA). */
function scripted(redis: Redis): Scripted {
  if (!prepared.has(redis)) {
    for (const [name, { numberOfKeys, lua }] of Object.entries(scripts)) {
      redis.defineCommand(name, { numberOfKeys, lua });
    }
    prepared.add(redis);
  }
  return redis as Scripted;
}

interface IdempotencyRecord {
  readonly state: 'running' | 'done';
  readonly fingerprint: string;
  /** The StoredResponse as JSON, once done. */
  readonly response?: string;
}

export class RedisChatRepository implements ChatRepository {
  constructor(private readonly run: <T>(operation: (redis: Redis) => Promise<T>) => Promise<T> = withRedis) {}

  getGlobalSystemPrompt(tenant: string): Promise<string | null> {
    return this.run((redis) => redis.get(keys.tenant(tenant).system));
  }

  async setGlobalSystemPrompt(tenant: string, content: string): Promise<void> {
    await this.run((redis) => redis.set(keys.tenant(tenant).system, content));
  }

  getChatSystemPrompt(chat: ChatRef): Promise<string | null> {
    return this.run((redis) => redis.get(keys.chat(chat).system));
  }

  async setChatSystemPrompt(chat: ChatRef, content: string): Promise<void> {
    await this.run((redis) => redis.set(keys.chat(chat).system, content));
  }

  async getMessages(chat: ChatRef): Promise<ChatMessage[]> {
    const raw = await this.run((redis) => redis.lrange(keys.chat(chat).messages, 0, -1));
    return raw.map(decode);
  }

  beginTurn(chat: ChatRef, leaseMs: number): Promise<BeginTurnResult> {
    const chatKeys = keys.chat(chat);
    const token = randomUUID();
    return this.run(async (redis) => {
      // Sent together, so the turn waits one round trip, not two. Not a MULTI or one pipeline: the
      // tenant's prompt lives in another hash slot than the chat, on another node of a cluster.
      const [globalSystemPrompt, reply] = await Promise.all([
        redis.get(keys.tenant(chat.tenant).system),
        scripted(redis).beginTurn(
          chatKeys.lease,
          chatKeys.meta,
          chatKeys.system,
          chatKeys.messages,
          token,
          leaseMs,
        ),
      ]);
      const [acquired, ...rest] = reply as [number, ...unknown[]];
      if (acquired === 0) return { acquired: false, retryInMs: Math.max(Number(rest[0]), 0) };
      const [generation, history, chatSystemPrompt] = rest as [string, string[], string | null | undefined];
      return {
        acquired: true,
        lease: {
          token,
          generation: String(generation),
          context: {
            globalSystemPrompt,
            chatSystemPrompt: chatSystemPrompt ?? null,
            history: history.map(decode),
          },
        },
      };
    });
  }

  commitTurn(
    chat: ChatRef,
    lease: TurnLease,
    user: ChatMessage,
    assistant: ChatMessage,
  ): Promise<CommitResult> {
    const chatKeys = keys.chat(chat);
    const now = Date.now();
    return this.run(
      async (redis) =>
        (await scripted(redis).commitTurn(
          chatKeys.lease,
          chatKeys.meta,
          chatKeys.messages,
          lease.token,
          lease.generation,
          now,
          encode(user, now),
          encode(assistant, now),
        )) as CommitResult,
    );
  }

  renewLease(chat: ChatRef, lease: TurnLease, leaseMs: number): Promise<boolean> {
    return this.run(
      async (redis) => (await scripted(redis).renewLease(keys.chat(chat).lease, lease.token, leaseMs)) === 1,
    );
  }

  async releaseLease(chat: ChatRef, lease: TurnLease): Promise<void> {
    await this.run((redis) => scripted(redis).releaseLease(keys.chat(chat).lease, lease.token));
  }

  async clearMessages(chat: ChatRef): Promise<void> {
    const chatKeys = keys.chat(chat);
    await this.run((redis) => scripted(redis).clearMessages(chatKeys.meta, chatKeys.messages));
  }

  async claimIdempotency(
    scope: IdempotencyScope,
    id: string,
    fingerprint: string,
    runningMs: number,
  ): Promise<IdempotencyClaim> {
    const reply = (await this.run((redis) =>
      scripted(redis).claimIdempotency(idempotencyKey(scope, id), fingerprint, runningMs),
    )) as string;
    if (reply === 'claimed') return { state: 'claimed' };
    const record = JSON.parse(reply) as IdempotencyRecord;
    if (record.fingerprint !== fingerprint) return { state: 'mismatch' };
    if (record.state === 'done' && record.response) {
      return { state: 'done', response: JSON.parse(record.response) as StoredResponse };
    }
    return { state: 'running' };
  }

  async completeIdempotency(
    scope: IdempotencyScope,
    id: string,
    response: StoredResponse,
    keepSeconds: number,
  ): Promise<void> {
    await this.run((redis) =>
      scripted(redis).completeIdempotency(idempotencyKey(scope, id), JSON.stringify(response), keepSeconds),
    );
  }

  async abandonIdempotency(scope: IdempotencyScope, id: string): Promise<void> {
    await this.run((redis) => redis.del(idempotencyKey(scope, id)));
  }
}

/** The repository every handler uses: one per container, over the shared connection. */
export const chatRepository: ChatRepository = new RedisChatRepository();
