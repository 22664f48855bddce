import { Redis } from 'ioredis';
import { type ChatRef, RedisChatRepository } from '../functions/shared/chat-repository';
import { REPLY, USER_MESSAGE } from './fixture';
import { checkInterrupted, onCleanup } from './lifecycle';

/**
 * Stores turns through the repository itself (as test/integration/history.test.ts does), on a
 * connection of its own so the handlers' instrumented client never sees them.
 */
export class Seeder {
  private readonly repository: RedisChatRepository;
  private readonly userTokens: number;
  private readonly replyTokens: number;

  /** `messageTokens` from bench/tokens.ts `loadMessageTokens()`. */
  constructor(redisUrl: string, messageTokens: (content: string) => number) {
    this.userTokens = messageTokens(USER_MESSAGE);
    this.replyTokens = messageTokens(REPLY);
    const redis = new Redis(redisUrl);
    // On Ctrl-C redis-server may stop before this connection does; its reconnect errors are noise.
    redis.on('error', () => undefined);
    onCleanup('close the seeding connection', () => {
      redis.disconnect();
    });
    this.repository = new RedisChatRepository({ maxPageBytes: 1 << 20 }, (operation) => operation(redis));
  }

  /** Appends `pairs` turns (the bench's user message and reply) to one chat. */
  async seedChat(chat: ChatRef, pairs: number): Promise<void> {
    for (let i = 0; i < pairs; i += 1) {
      const begun = await this.repository.beginTurn(chat, 10_000);
      if (!begun.acquired) throw new Error(`seed: chat ${chat.chatId} is busy`);
      const result = await this.repository.commitTurn(chat, begun.lease, {
        user: { role: 'user', content: USER_MESSAGE },
        userTokens: this.userTokens,
        assistant: { role: 'assistant', content: REPLY },
        assistantTokens: this.replyTokens,
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
      });
      if (result !== 'stored') throw new Error(`seed: turn not stored (${result})`);
    }
  }

  /** Seeds many chats, `concurrency` at a time. */
  async seedChats(chats: readonly ChatRef[], pairs: number, concurrency = 64): Promise<void> {
    let next = 0;
    const worker = async () => {
      for (;;) {
        checkInterrupted();
        const chat = chats[next];
        next += 1;
        if (chat === undefined) return;
        await this.seedChat(chat, pairs);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, chats.length) }, worker));
  }

  /** How many messages a chat holds, read through the repository. */
  async messageCount(chat: ChatRef): Promise<number> {
    return (await this.repository.getChatInfo(chat))?.message_count ?? 0;
  }
}
