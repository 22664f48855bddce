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

export interface ChatRepository {
  getGlobalSystemPrompt(tenant: string): Promise<string | null>;
  setGlobalSystemPrompt(tenant: string, content: string): Promise<void>;
  getChatSystemPrompt(chat: ChatRef): Promise<string | null>;
  setChatSystemPrompt(chat: ChatRef, content: string): Promise<void>;
  /** Every message of the chat, oldest first. */
  getMessages(chat: ChatRef): Promise<ChatMessage[]>;
  getTurnContext(chat: ChatRef): Promise<TurnContext>;
  /** Appends a user message and its reply together: both or neither. */
  appendTurn(chat: ChatRef, user: ChatMessage, assistant: ChatMessage): Promise<void>;
  /** Deletes the chat's messages; its system prompt stays. */
  clearMessages(chat: ChatRef): Promise<void>;
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
 *   {prefix}:{c:<tenant>:<chat>}:system       string   the chat's system prompt
 *   {prefix}:{c:<tenant>:<chat>}:messages     list     JSON messages, oldest first
 *
 * The braces are Redis Cluster hash tags: every key of one chat lands in one slot, so multi-key
 * commands on a chat stay valid on a cluster, while different chats spread over the slots.
 */
export const keys = {
  tenantSystem: (tenant: string) => `${redisConfig.keyPrefix}:{t:${safe(tenant)}}:system`,
  chat: (chat: ChatRef) => {
    const base = `${redisConfig.keyPrefix}:{c:${safe(chat.tenant)}:${safe(chat.chatId)}}`;
    return { system: `${base}:system`, messages: `${base}:messages` };
  },
};

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

export class RedisChatRepository implements ChatRepository {
  constructor(private readonly run: <T>(operation: (redis: Redis) => Promise<T>) => Promise<T> = withRedis) {}

  getGlobalSystemPrompt(tenant: string): Promise<string | null> {
    return this.run((redis) => redis.get(keys.tenantSystem(tenant)));
  }

  async setGlobalSystemPrompt(tenant: string, content: string): Promise<void> {
    await this.run((redis) => redis.set(keys.tenantSystem(tenant), content));
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

  getTurnContext(chat: ChatRef): Promise<TurnContext> {
    const chatKeys = keys.chat(chat);
    // Issued together: auto-pipelining sends them in one round trip (per node on a cluster).
    return this.run(async (redis) => {
      const [globalSystemPrompt, chatSystemPrompt, history] = await Promise.all([
        redis.get(keys.tenantSystem(chat.tenant)),
        redis.get(chatKeys.system),
        redis.lrange(chatKeys.messages, 0, -1),
      ]);
      return { globalSystemPrompt, chatSystemPrompt, history: history.map(decode) };
    });
  }

  async appendTurn(chat: ChatRef, user: ChatMessage, assistant: ChatMessage): Promise<void> {
    const now = Date.now();
    // One RPUSH with both values is atomic: no reader ever sees a question without its reply.
    await this.run((redis) =>
      redis.rpush(keys.chat(chat).messages, encode(user, now), encode(assistant, now)),
    );
  }

  async clearMessages(chat: ChatRef): Promise<void> {
    await this.run((redis) => redis.del(keys.chat(chat).messages));
  }
}

/** The repository every handler uses: one per container, over the shared connection. */
export const chatRepository: ChatRepository = new RedisChatRepository();
