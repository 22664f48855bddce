import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { loadChatConfig } from './config';
import { type RedisClient, redisConfig, scanAll, withRedis } from './redis';
import { CHAT_KEY_COUNT, scriptKeyCounts, scripts } from './redis-scripts';

/** A message as OpenAI's chat API takes it; image turns carry content parts. */
export type MessageContent =
  | string
  | ReadonlyArray<{ type: 'text'; text: string } | { type: 'image_url'; image_url: { url: string } }>;

export interface ChatMessage {
  readonly role: 'user' | 'assistant';
  readonly content: MessageContent;
}

/** A stored message: ids grow by one per message and are never reused, even after a clear. */
export interface StoredMessage extends ChatMessage {
  readonly id: number;
  /** Milliseconds since the epoch, when its turn was stored. */
  readonly created_at: number;
  /** Its tokens in a prompt, counted once when stored. */
  readonly tokens: number;
}

/** One chat of one tenant. Both parts are validated ids (`[A-Za-z0-9_-]`). */
export interface ChatRef {
  readonly tenant: string;
  readonly chatId: string;
}

/** Per-chat overrides of the deployment's settings; unset fields are absent. */
export interface ChatSettings {
  readonly model?: string;
  readonly temperature?: number;
  readonly max_tokens?: number;
  readonly max_context_tokens?: number;
  readonly ttl_days?: number;
}

/** A settings change: a value sets a field, null unsets it. */
export type SettingsChange = { readonly [K in keyof ChatSettings]?: ChatSettings[K] | null };

export interface Usage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  readonly turns: number;
}

export interface ChatSummary {
  readonly id: string;
  /** Milliseconds since the epoch. */
  readonly created_at: number;
  readonly updated_at: number;
  readonly message_count: number;
}

export interface ChatInfo extends ChatSummary {
  readonly usage: Usage;
  readonly settings: ChatSettings;
}

/**
 * The newest part of a chat's history: whole pairs (a user message and its reply), each message
 * as the JSON OpenAI takes (`{"role":…,"content":…}`), ready to be spliced into a request.
 */
export interface HistoryTail {
  /** Messages as UTF-8 JSON, oldest first: two per pair. */
  readonly messages: Uint8Array[];
  /** Tokens of each pair, newest first. */
  readonly pairTokens: number[];
  /** Pairs stored before these (0 when the whole history was read). */
  readonly olderPairs: number;
}

/** What a turn reads before calling the model. */
export interface TurnContext {
  readonly globalSystemPrompt: string | null;
  readonly chatSystemPrompt: string | null;
  /**
   * The chat's newest pairs, up to `TURN_READ_PAIRS`; the caller picks the window that fits its
   * budget and reads on with `readOlderPairs` only if the window needs more.
   */
  readonly history: HistoryTail;
  readonly settings: ChatSettings;
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

/** A finished turn to store. */
export interface TurnRecord {
  readonly user: ChatMessage;
  readonly userTokens: number;
  readonly assistant: ChatMessage;
  readonly assistantTokens: number;
  readonly usage: Omit<Usage, 'turns'>;
  /**
   * The turn request's idempotency record (claimed in the chat's scope) and the answer to keep in
   * it, written with the turn: once the turn is stored, a retry replays it whatever became of the
   * commit's reply.
   */
  readonly keep?: KeptAnswer;
}

/** An answer to keep in a claimed idempotency record, for replay. */
export interface KeptAnswer {
  readonly id: string;
  /** The request body's fingerprint the record was claimed with. */
  readonly fingerprint: string;
  readonly response: StoredResponse;
  readonly keepSeconds: number;
}

/**
 * `stored` (also when this very commit had run before and its reply was lost), or why not: the
 * lease ran out (someone else may hold the chat), or the chat was cleared.
 */
export type CommitResult = 'stored' | 'lease_lost' | 'cleared';

/** One page of a chat's history, oldest first, and the cursors to the pages around it. */
export interface MessagePage {
  readonly messages: StoredMessage[];
  /** Pass as `before` to get older messages; absent when there are none. */
  readonly before?: number;
  /** Pass as `after` to get newer messages; absent when there are none. */
  readonly after?: number;
}

export interface PageRequest {
  readonly limit?: number;
  readonly before?: number;
  readonly after?: number;
}

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
  /** With `keep`, the request's answer goes into its idempotency record in the same step. */
  setGlobalSystemPrompt(tenant: string, content: string, keep?: KeptAnswer): Promise<void>;
  getChatSystemPrompt(chat: ChatRef): Promise<string | null>;
  /** With `keep`, the request's answer goes into its idempotency record in the same step. */
  setChatSystemPrompt(chat: ChatRef, content: string, keep?: KeptAnswer): Promise<void>;
  getSettings(chat: ChatRef): Promise<ChatSettings>;
  updateSettings(chat: ChatRef, change: SettingsChange): Promise<ChatSettings>;
  /** The chat's dates, size, usage and settings; null if it does not exist. */
  getChatInfo(chat: ChatRef): Promise<ChatInfo | null>;
  /** One page of messages, oldest first; reads O(page) whatever the chat's length. */
  getMessages(chat: ChatRef, page: PageRequest): Promise<MessagePage>;
  /**
   * Takes the chat's turn lease, if free, and reads what the turn needs. With `readAhead`, in one
   * round trip: the newest messages are read beside the lease, and read again under it in the rare
   * case the two did not meet (a script re-sent after NOSCRIPT). Without it (a caller polling a
   * busy chat), the messages are read only once the lease is held. The request is written before
   * this returns, so the caller can work while Redis answers.
   */
  beginTurn(chat: ChatRef, leaseMs: number, options?: { readAhead?: boolean }): Promise<BeginTurnResult>;
  /** The `count` pairs stored before the newest `skip` pairs, in one round trip. */
  readOlderPairs(chat: ChatRef, skip: number, count: number): Promise<HistoryTail>;
  /**
   * Appends the user message and its reply together (both or neither) with the chat's usage and
   * releases the lease, only if the lease is still this turn's and the chat was not cleared since
   * it began; keeps the turn's answer in its idempotency record in the same step. Then adds the
   * usage to the tenant's totals. Safe to send again: a commit that already ran answers as it did
   * (`stored`, or `cleared` for one refused for a clear), unless another turn's commit came between.
   */
  commitTurn(chat: ChatRef, lease: TurnLease, turn: TurnRecord): Promise<CommitResult>;
  /**
   * Extends a lease still held, and with it the turn request's running idempotency record (by id,
   * in the chat's scope) if it has one; false once the lease was lost.
   */
  renewLease(chat: ChatRef, lease: TurnLease, leaseMs: number, recordId?: string): Promise<boolean>;
  /** Gives a lease back early (the turn failed). */
  releaseLease(chat: ChatRef, lease: TurnLease): Promise<void>;
  /**
   * Deletes the chat's messages; its system prompt and settings stay. Turns in flight are not
   * stored. With `keep`, the request's answer goes into its idempotency record in the same step.
   * Safe to send again: the same call, re-sent after a dropped connection, clears nothing more.
   */
  clearMessages(chat: ChatRef, keep?: KeptAnswer): Promise<void>;
  /** Deletes the chat and everything in it; false if there was nothing. */
  deleteChat(chat: ChatRef): Promise<boolean>;
  /** The tenant's chats, most recently updated first. */
  listChats(tenant: string, limit: number, cursor?: string): Promise<{ chats: ChatSummary[]; next?: string }>;
  /** Deletes every chat of the tenant; answers how many there were. */
  deleteAllChats(tenant: string): Promise<number>;
  getUsage(tenant: string): Promise<Usage>;
  /**
   * Claims an idempotency key for a request with this body fingerprint, or reports its state.
   * `claimToken`, unique to the request, makes the claim safe to send again.
   */
  claimIdempotency(
    scope: IdempotencyScope,
    id: string,
    fingerprint: string,
    runningMs: number,
    claimToken?: string,
  ): Promise<IdempotencyClaim>;
  /**
   * Keeps the response of a claimed key for replay (in a new record if the claim ran out; not if
   * a request with another body holds the key now).
   */
  completeIdempotency(
    scope: IdempotencyScope,
    id: string,
    fingerprint: string,
    response: StoredResponse,
    keepSeconds: number,
  ): Promise<void>;
  /**
   * Drops a claim whose request failed, so a retry runs again; a record whose answer was kept
   * (its turn was stored, whatever the request then saw) stays.
   */
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
 *   {prefix}:{t:<tenant>}:system               string  the tenant's global system prompt
 *   {prefix}:{t:<tenant>}:chats                zset    chat ids by last write (ms), for listing
 *   {prefix}:{t:<tenant>}:usage                hash    the tenant's token totals
 *   {prefix}:{t:<tenant>}:idem                 set     the tenant routes' idempotency records
 *   {prefix}:{t:<tenant>}:idem:<sha256>        string  one idempotency record
 *   {prefix}:{t:<tenant>}:counted:<token>      string  a turn's usage was added (on a cluster only;
 *                                                      expires after COUNTED_MARKER_MS)
 *   {prefix}:{c:<tenant>:<chat>}:meta          hash    gen, seq, base, created_at, updated_at,
 *                                                      usage totals, the lease tokens of the last
 *                                                      turn stored and the last refused, the
 *                                                      last clear's token
 *   {prefix}:{c:<tenant>:<chat>}:messages      list    JSON messages, oldest first (id = base + index)
 *   {prefix}:{c:<tenant>:<chat>}:pairs         list    tokens of each user+reply pair (kept for
 *                                                      earlier versions; turns read the counts
 *                                                      stored in the messages)
 *   {prefix}:{c:<tenant>:<chat>}:system        string  the chat's system prompt
 *   {prefix}:{c:<tenant>:<chat>}:settings      hash    the chat's settings
 *   {prefix}:{c:<tenant>:<chat>}:lease         string  the running turn's token, with an expiry
 *   {prefix}:{c:<tenant>:<chat>}:idem          set     the chat's idempotency records
 *   {prefix}:{c:<tenant>:<chat>}:idem:<sha256> string  one idempotency record
 *
 * The braces are Redis Cluster hash tags: every key of one chat lands in one slot, so the scripts
 * that touch several keys of a chat stay valid on a cluster, while chats spread over the slots.
 * The tenant's keys sit in another slot; they are kept right without cross-slot transactions:
 * every write refreshes the chat's index entry, a listed chat found gone is dropped from the
 * index, and erasure walks the index and then sweeps what is left.
 */
export const keys = {
  tenant: (tenant: string) => {
    const base = `${redisConfig.keyPrefix}:{t:${safe(tenant)}}`;
    return {
      system: `${base}:system`,
      chats: `${base}:chats`,
      usage: `${base}:usage`,
      idempotencySet: `${base}:idem`,
      idempotency(id: string) {
        return `${base}:idem:${safe(id)}`;
      },
      counted(token: string) {
        return `${base}:counted:${safe(token)}`;
      },
      /** A SCAN pattern for every chat key of the tenant. */
      chatPattern: `${redisConfig.keyPrefix}:{c:${safe(tenant)}:*`,
    };
  },
  chat: (chat: ChatRef) => {
    const base = `${redisConfig.keyPrefix}:{c:${safe(chat.tenant)}:${safe(chat.chatId)}}`;
    return {
      meta: `${base}:meta`,
      messages: `${base}:messages`,
      pairs: `${base}:pairs`,
      system: `${base}:system`,
      settings: `${base}:settings`,
      lease: `${base}:lease`,
      idempotencySet: `${base}:idem`,
      idempotency(id: string) {
        return `${base}:idem:${safe(id)}`;
      },
    };
  },
};

/** The keys of a chat in the order every chat script takes them. */
function chatKeys(chat: ChatRef): string[] {
  const k = keys.chat(chat);
  const ordered = [k.meta, k.messages, k.pairs, k.system, k.settings, k.lease, k.idempotencySet];
  if (ordered.length !== CHAT_KEY_COUNT) throw new Error('Chat script keys out of step');
  return ordered;
}

/** The keys of a scope's idempotency records: the tenant's, or one chat's. */
function scopeKeys(scope: IdempotencyScope): {
  idempotency: (id: string) => string;
  idempotencySet: string;
} {
  return scope.chatId === undefined
    ? keys.tenant(scope.tenant)
    : keys.chat({ tenant: scope.tenant, chatId: scope.chatId });
}

function idempotencyKeys(scope: IdempotencyScope, id: string): { record: string; set: string } {
  const k = scopeKeys(scope);
  return { record: k.idempotency(id), set: k.idempotencySet };
}

type ScriptName = keyof typeof scripts;
type Scripted = RedisClient & { [name in ScriptName]: (...args: (string | number)[]) => Promise<unknown> };

/**
 * The connection with the scripts as commands (ioredis calls them by SHA, EVALSHA). `redis.ts`
 * defines them when it creates the client; a client made elsewhere (a test's) gets them here.
 */
function scripted(redis: RedisClient): Scripted {
  if (!(FIRST_SCRIPT in redis)) {
    for (const [name, lua] of Object.entries(scripts)) {
      redis.defineCommand(name, { numberOfKeys: scriptKeyCounts[name as ScriptName], lua });
    }
  }
  return redis as Scripted;
}

/**
 * Issues commands that go to Redis together, in one round trip. On a single node the socket is
 * corked while they are issued, so they leave in one write: each write wakes redis-server, and an
 * ioredis pipeline costs more to build (it copies every script onto itself) than the commands. On a
 * cluster each command goes to the node that holds its slot, side by side.
 */
function together<T>(redis: RedisClient, issue: (client: Scripted) => T): T {
  const socket = redis instanceof Cluster ? undefined : redis.stream;
  socket?.cork();
  try {
    return issue(scripted(redis));
  } finally {
    socket?.uncork();
  }
}

/**
 * The idempotency record a script writes `keep` into and its scope's record set (with no `keep`,
 * the set stands in for the record: a key in the same slot the script leaves alone, as KEYS must
 * stay the same length), and the arguments that carry the answer: response (JSON, or ''),
 * keepSeconds, fingerprint.
 */
function keptIn(
  scope: IdempotencyScope,
  keep: KeptAnswer | undefined,
): { record: string; set: string; argv: (string | number)[] } {
  if (keep === undefined) {
    const set = scopeKeys(scope).idempotencySet;
    return { record: set, set, argv: ['', 0, ''] };
  }
  const { record, set } = idempotencyKeys(scope, keep.id);
  return { record, set, argv: [JSON.stringify(keep.response), keep.keepSeconds, keep.fingerprint] };
}

/**
 * How long a cluster remembers that a turn's usage was added to its tenant's totals: longer than
 * any re-send of the commit after a reconnect (about a command timeout), short enough that the
 * markers of busy tenants stay few.
 */
const COUNTED_MARKER_MS = 60_000;

/**
 * What the commit script answered. A commit that finds its own turn stored already (ioredis sent it
 * again after its reply was lost) stored it: the tenant's usage was added then, not again now.
 */
function commitResult(reply: unknown): CommitResult {
  const [result] = reply as [CommitResult | 'already_stored'];
  return result === 'already_stored' ? 'stored' : result;
}

/** A client with this command has them all (defining them again would lose ioredis' SHA state). */
const FIRST_SCRIPT = Object.keys(scripts)[0] as ScriptName;

function decodeMessage(raw: string): StoredMessage {
  return JSON.parse(raw) as StoredMessage;
}

const ID_FIELD = Buffer.from('{"id":');
const ROLE_FIELD = Buffer.from(',"role":');
const CREATED_AT_FIELD = Buffer.from(',"created_at":');
const TOKENS_FIELD = Buffer.from(',"tokens":');

/** Whether `field` is in `raw` at `at` (a plain loop: cheaper than a native call per message). */
function fieldAt(raw: Buffer, at: number, field: Buffer): boolean {
  for (let i = 0; i < field.length; i += 1) if (raw[at + i] !== field[i]) return false;
  return true;
}

/** The digits at `at`, as a number, and where they end. */
function digitsAt(raw: Buffer, at: number): [value: number, end: number] {
  let value = 0;
  let i = at;
  for (let byte = raw[i]; byte !== undefined && byte >= 0x30 && byte <= 0x39; byte = raw[++i])
    value = value * 10 + (byte - 0x30);
  return [value, i];
}

/**
 * The `{"id":N` the commit script writes in front of a stored message: N, and where the comma
 * after it is; undefined for another shape.
 */
function idPrefix(raw: Buffer | undefined): { id: number; end: number } | undefined {
  if (raw === undefined || !fieldAt(raw, 0, ID_FIELD)) return undefined;
  const [id, end] = digitsAt(raw, ID_FIELD.length);
  return end > ID_FIELD.length && raw[end] === 0x2c ? { id, end } : undefined;
}

/** A stored message as the prompt takes it, and the tokens stored with it. */
interface PromptMessage {
  readonly json: Buffer;
  readonly tokens: number;
}

/**
 * A stored message as the prompt takes it, `{"role":…,"content":…}` as UTF-8, cut out of the
 * stored JSON without decoding or copying it, with the tokens stored beside it: the commit script
 * writes `{"id":N,` in front of `{"role":…,"content":…,"created_at":…,"tokens":…}`. The first comma
 * follows the numeric id; the last `,"created_at":` is the top-level one (inside a JSON string
 * every quote is escaped, and the content comes before it). Anything else is parsed and re-encoded.
 * A message stored without a count counts as many tokens as it has bytes, never fewer than it has.
 */
function promptMessage(raw: Buffer, role: ChatMessage['role']): PromptMessage {
  const start = idPrefix(raw)?.end ?? raw.length;
  let end = raw.length - CREATED_AT_FIELD.length;
  while (end > start && !(raw[end] === 0x2c && fieldAt(raw, end, CREATED_AT_FIELD))) end -= 1;
  if (start < end && fieldAt(raw, start, ROLE_FIELD)) {
    const [, afterCreatedAt] = digitsAt(raw, end + CREATED_AT_FIELD.length);
    const [count, afterCount] = fieldAt(raw, afterCreatedAt, TOKENS_FIELD)
      ? digitsAt(raw, afterCreatedAt + TOKENS_FIELD.length)
      : [Number.NaN, -1];
    // In place: the commas before "role" and "created_at" become the braces. The buffer is this
    // reply's own bytes, read for this turn only.
    raw[start] = 0x7b; // {
    raw[end] = 0x7d; // }
    const json = raw.subarray(start, end + 1);
    const counted = afterCount === raw.length - 1 && raw[afterCount] === 0x7d;
    return { json, tokens: counted ? count : json.length };
  }
  let stored: Partial<StoredMessage> = {};
  try {
    stored = decodeMessage(raw.toString());
  } catch {
    // Not JSON (never written by us): sent as an empty message of its place's role, so the pair
    // stays whole and the chat stays usable.
  }
  const content = typeof stored.content === 'string' || Array.isArray(stored.content) ? stored.content : '';
  const json = Buffer.from(JSON.stringify({ role: stored.role ?? role, content }));
  return { json, tokens: typeof stored.tokens === 'number' ? stored.tokens : json.length };
}

/** Pairs a turn reads with the lease: most windows fit, and a longer one reads on. */
export const TURN_READ_PAIRS = 64;

/**
 * The newest whole pairs of `raw` (stored messages, oldest first) with their costs. A pair's two
 * messages are written together, so a read of an even count from the end holds whole pairs; an
 * odd one (never expected) loses its oldest message rather than send a pair half.
 */
function historyTail(raw: Buffer[], olderPairs: number): HistoryTail {
  const pairs = Math.floor(raw.length / 2);
  const first = raw.length - 2 * pairs;
  const messages: Buffer[] = [];
  const pairTokens: number[] = [];
  for (let i = first; i < raw.length; i += 2) {
    const user = promptMessage(raw[i] as Buffer, 'user');
    const reply = promptMessage(raw[i + 1] as Buffer, 'assistant');
    messages.push(user.json, reply.json);
    pairTokens.push(user.tokens + reply.tokens);
  }
  return { messages, pairTokens: pairTokens.reverse(), olderPairs };
}

/** Pairs stored before the newest `read` of `count` messages. */
function olderPairsThan(count: number, read: number): number {
  return Math.max(Math.floor(count / 2) - Math.floor(read / 2), 0);
}

/**
 * Whether messages read beside the lease are the chat's newest as the lease found them: as many
 * as there were (up to the read's size), the last one the latest written (the id before `nextId`).
 * A newest message of another shape (stored before messages had ids) cannot tell, so it is read
 * again.
 */
function readMatches(read: readonly Buffer[], count: number, nextId: number): boolean {
  if (read.length !== Math.min(count, 2 * TURN_READ_PAIRS)) return false;
  return read.length === 0 || idPrefix(read.at(-1))?.id === nextId - 1;
}

function isCrossSlot(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('CROSSSLOT');
}

/** JSON of a message without its id: the commit script puts the id in front. */
function encodeWithoutId(message: ChatMessage, createdAt: number, tokens: number): string {
  return JSON.stringify({ role: message.role, content: message.content, created_at: createdAt, tokens });
}

const NUMERIC_SETTINGS = new Set(['temperature', 'max_tokens', 'max_context_tokens', 'ttl_days']);

function decodeSettings(json: string): ChatSettings {
  return settingsOf(JSON.parse(json) as Record<string, string>);
}

/** The settings hash as Redis holds it (all strings) as typed settings. */
function settingsOf(raw: Record<string, string>): ChatSettings {
  const settings: Record<string, string | number> = {};
  for (const [field, value] of Object.entries(raw))
    settings[field] = NUMERIC_SETTINGS.has(field) ? Number(value) : value;
  return settings as ChatSettings;
}

function toNumber(value: unknown): number {
  return Number(value ?? 0);
}

/** A position in a tenant's chat index: the last chat a page showed. */
interface IndexEntry {
  readonly id: string;
  readonly score: number;
}

function encodeCursor(entry: IndexEntry): string {
  return `${entry.score}:${entry.id}`;
}

function decodeCursor(cursor: string | undefined): IndexEntry | undefined {
  if (cursor === undefined) return undefined;
  const [score, id] = cursor.split(':');
  return { score: Number(score), id: id ?? '' };
}

/**
 * Up to `count` index entries after `position`, newest first. Entries with the same score come in
 * reverse order of their ids, so those at the position's score with an id not below its id were
 * already shown.
 */
async function indexAfter(
  redis: RedisClient,
  index: string,
  position: IndexEntry | undefined,
  count: number,
): Promise<IndexEntry[]> {
  const max = position === undefined ? '+inf' : String(position.score);
  const flat = await redis.zrevrangebyscore(index, max, '-inf', 'WITHSCORES', 'LIMIT', 0, count + 64);
  const entries: IndexEntry[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const entry = { id: String(flat[i]), score: Number(flat[i + 1]) };
    if (position && entry.score === position.score && entry.id >= position.id) continue;
    entries.push(entry);
  }
  return entries.slice(0, count);
}

interface IdempotencyRecord {
  readonly state: 'running' | 'done';
  readonly fingerprint: string;
  /** The StoredResponse as JSON, once done. */
  readonly response?: string;
}

export interface RepositoryOptions {
  /** Days a chat lives after its last write, unless its settings say otherwise. */
  readonly ttlDays?: number;
  /** With no `limit`, a page of history stays under this many bytes. */
  readonly maxPageBytes: number;
}

export class RedisChatRepository implements ChatRepository {
  private readonly defaultTtlSeconds: number;
  /** Set once a script spanning the tenant's and a chat's slots was refused (CROSSSLOT). */
  private crossSlotRefused = false;

  constructor(
    private readonly options: RepositoryOptions,
    private readonly run: <T>(operation: (redis: RedisClient) => Promise<T>) => Promise<T> = withRedis,
  ) {
    this.defaultTtlSeconds = Math.ceil((options.ttlDays ?? 0) * 86_400);
  }

  /**
   * Whether the tenant's keys and a chat's can be used in one script: on a single node, unless
   * that node is in cluster mode (Redis then refuses scripts across slots even on one shard).
   */
  private oneNode(redis: RedisClient): boolean {
    return !(redis instanceof Cluster) && !this.crossSlotRefused;
  }

  getGlobalSystemPrompt(tenant: string): Promise<string | null> {
    return this.run((redis) => redis.get(keys.tenant(tenant).system));
  }

  async setGlobalSystemPrompt(tenant: string, content: string, keep?: KeptAnswer): Promise<void> {
    if (keep === undefined) {
      await this.run((redis) => redis.set(keys.tenant(tenant).system, content));
      return;
    }
    const { record, set, argv } = keptIn({ tenant }, keep);
    await this.run((redis) =>
      scripted(redis).setTenantSystem(keys.tenant(tenant).system, record, set, content, ...argv),
    );
  }

  getChatSystemPrompt(chat: ChatRef): Promise<string | null> {
    return this.run((redis) => redis.get(keys.chat(chat).system));
  }

  async setChatSystemPrompt(chat: ChatRef, content: string, keep?: KeptAnswer): Promise<void> {
    const now = Date.now();
    const { record, argv: kept } = keptIn(chat, keep);
    await this.run((redis) =>
      Promise.all([
        scripted(redis).setSystem(...chatKeys(chat), record, content, now, this.defaultTtlSeconds, ...kept),
        this.index(redis, chat, now),
      ]),
    );
  }

  async getSettings(chat: ChatRef): Promise<ChatSettings> {
    const raw = await this.run((redis) => redis.hgetall(keys.chat(chat).settings));
    return settingsOf(raw);
  }

  async updateSettings(chat: ChatRef, change: SettingsChange): Promise<ChatSettings> {
    const now = Date.now();
    const encoded = JSON.stringify(
      Object.fromEntries(Object.entries(change).map(([k, v]) => [k, v ?? false])),
    );
    const [settings] = await this.run((redis) =>
      Promise.all([
        scripted(redis).updateSettings(...chatKeys(chat), encoded, now, this.defaultTtlSeconds),
        this.index(redis, chat, now),
      ]),
    );
    return decodeSettings(settings as string);
  }

  async getChatInfo(chat: ChatRef): Promise<ChatInfo | null> {
    const reply = (await this.run((redis) => scripted(redis).chatInfo(...chatKeys(chat)))) as unknown[];
    if (reply.length === 0) return null;
    const [created, updated, prompt, completion, total, turns, count, settings] = reply;
    return {
      id: chat.chatId,
      created_at: toNumber(created),
      updated_at: toNumber(updated),
      message_count: toNumber(count),
      usage: {
        prompt_tokens: toNumber(prompt),
        completion_tokens: toNumber(completion),
        total_tokens: toNumber(total),
        turns: toNumber(turns),
      },
      settings: decodeSettings(String(settings)),
    };
  }

  async getMessages(chat: ChatRef, page: PageRequest): Promise<MessagePage> {
    const reply = (await this.run((redis) =>
      scripted(redis).readPage(
        ...chatKeys(chat),
        page.limit ?? '',
        page.before ?? '',
        page.after ?? '',
        this.options.maxPageBytes,
        1000,
      ),
    )) as [number, number, number, number, string[]];
    const [first, last, length, , raw] = reply;
    const messages = raw.map(decodeMessage);
    const oldest = messages[0];
    const newest = messages.at(-1);
    return {
      messages,
      ...(first > 0 && oldest ? { before: oldest.id } : {}),
      ...(last < length - 1 && newest ? { after: newest.id } : {}),
    };
  }

  async beginTurn(
    chat: ChatRef,
    leaseMs: number,
    options: { readAhead?: boolean } = {},
  ): Promise<BeginTurnResult> {
    const token = randomUUID();
    const readAhead = options.readAhead ?? true;
    const tenantPrompt = keys.tenant(chat.tenant).system;
    return this.run(async (redis) => {
      // One round trip: the lease with the chat's small values (a script, which on a single node
      // reads the tenant's prompt too; on a cluster another node may hold it, so a GET goes
      // beside it), and the newest messages, which hold their token counts. The messages are read
      // outside the script, which would copy each twice, costing Redis more than the read itself.
      // That needs no transaction: the lease comes first, and while it is ours no other turn
      // appends; a clear or delete landing in between moves the generation on or drops the
      // lease, so the commit refuses this turn whatever it read. Should the read not land right
      // after the lease (ioredis re-sends a script after NOSCRIPT), the check below reads again.
      const oneNode = this.oneNode(redis);
      const [lease, messages, clusterPrompt] = await Promise.allSettled(
        together(redis, (client) => [
          oneNode
            ? client.beginTurnOnOneNode(...chatKeys(chat), tenantPrompt, token, leaseMs)
            : client.beginTurn(...chatKeys(chat), token, leaseMs),
          readAhead ? client.lrangeBuffer(keys.chat(chat).messages, -2 * TURN_READ_PAIRS, -1) : undefined,
          oneNode ? undefined : client.get(tenantPrompt),
        ]),
      );
      // The lease is ours once the script set it, even if the script failed after that (writes
      // before a Lua error stay): any failure from there on gives it back rather than leave the
      // chat busy until it expires. The release checks the token, so it never frees another's.
      const giveBack = () =>
        scripted(redis)
          .releaseLease(...chatKeys(chat), token)
          .catch(() => undefined);
      if (lease.status === 'rejected') {
        if (oneNode && isCrossSlot(lease.reason)) {
          // A cluster-mode endpoint used as a single node: no script may span two slots there.
          this.crossSlotRefused = true;
          return this.beginTurn(chat, leaseMs, options);
        }
        await giveBack();
        throw lease.reason;
      }
      const [taken, ...rest] = lease.value as [number, ...unknown[]];
      if (taken !== 1) return { acquired: false, retryInMs: Math.max(Number(rest[0]), 0) };
      try {
        const [generation, flatSettings, chatSystemPrompt, messageCount, nextId, onePrompt] = rest as [
          string,
          string[],
          string | null,
          number,
          string,
          string | null | undefined,
        ];
        if (clusterPrompt.status === 'rejected') throw clusterPrompt.reason;
        if (messages.status === 'rejected') throw messages.reason;
        const read = messages.value as Buffer[] | undefined;
        const history =
          read !== undefined && readMatches(read, Number(messageCount), Number(nextId))
            ? historyTail(read, olderPairsThan(Number(messageCount), read.length))
            : await this.readOlderPairs(chat, 0, TURN_READ_PAIRS);
        const settings: Record<string, string> = {};
        for (let i = 0; i + 1 < flatSettings.length; i += 2)
          settings[flatSettings[i] as string] = flatSettings[i + 1] as string;
        return {
          acquired: true,
          lease: {
            token,
            generation: String(generation),
            context: {
              globalSystemPrompt: (oneNode ? onePrompt : (clusterPrompt.value as string | null)) ?? null,
              chatSystemPrompt: chatSystemPrompt ?? null,
              history,
              settings: settingsOf(settings),
            },
          },
        };
      } catch (error) {
        await giveBack();
        throw error;
      }
    });
  }

  async readOlderPairs(chat: ChatRef, skip: number, count: number): Promise<HistoryTail> {
    const k = keys.chat(chat);
    const [messageCount, rawMessages] = await this.run((redis) =>
      Promise.all(
        together(redis, (client) => [
          client.llen(k.messages),
          client.lrangeBuffer(k.messages, -2 * (skip + count), -(2 * skip + 1)),
        ]),
      ),
    );
    return historyTail(rawMessages, olderPairsThan(messageCount - 2 * skip, rawMessages.length));
  }

  async commitTurn(chat: ChatRef, lease: TurnLease, turn: TurnRecord): Promise<CommitResult> {
    const now = Date.now();
    const { usage } = turn;
    const tenant = keys.tenant(chat.tenant);
    const addUsage = (client: Scripted, sign: 1 | -1, chatId: string) =>
      client.tenantTurn(
        tenant.usage,
        tenant.chats,
        tenant.counted(lease.token),
        sign * usage.prompt_tokens,
        sign * usage.completion_tokens,
        sign * usage.total_tokens,
        sign,
        now,
        chatId,
        COUNTED_MARKER_MS,
      );
    const args = [
      lease.token,
      lease.generation,
      now,
      encodeWithoutId(turn.user, now, turn.userTokens),
      encodeWithoutId(turn.assistant, now, turn.assistantTokens),
      turn.userTokens + turn.assistantTokens,
      usage.prompt_tokens,
      usage.completion_tokens,
      usage.total_tokens,
      this.defaultTtlSeconds,
    ];
    const { record, argv: kept } = keptIn(chat, turn.keep);
    return this.run(async (redis) => {
      // On one node, one script stores the turn (with the chat's usage and the lease release)
      // and adds the usage to the tenant's totals and index, all or nothing.
      if (this.oneNode(redis)) {
        try {
          const reply = await scripted(redis).commitTurnOnOneNode(
            ...chatKeys(chat),
            tenant.usage,
            tenant.chats,
            record,
            ...args,
            chat.chatId,
            ...kept,
          );
          return commitResult(reply);
        } catch (error) {
          // Refused before it ran (a cluster-mode endpoint): the two scripts below instead.
          if (!isCrossSlot(error)) throw error;
          this.crossSlotRefused = true;
        }
      }
      // On a cluster the tenant's keys live in another slot: the tenant's part goes beside the
      // turn, in the same round trip, and is taken back in the rare case the turn is refused.
      const [reply] = await Promise.all([
        scripted(redis).commitTurn(...chatKeys(chat), record, ...args, ...kept),
        addUsage(scripted(redis), 1, chat.chatId),
      ]);
      const result = commitResult(reply);
      if (result !== 'stored') await addUsage(scripted(redis), -1, '');
      return result;
    });
  }

  async renewLease(chat: ChatRef, lease: TurnLease, leaseMs: number, recordId?: string): Promise<boolean> {
    const k = keys.chat(chat);
    // Without a record, a chat key the script leaves alone (KEYS stay the same length).
    const record = recordId === undefined ? k.idempotencySet : k.idempotency(recordId);
    const renewed = await this.run((redis) =>
      scripted(redis).renewLease(
        ...chatKeys(chat),
        record,
        lease.token,
        leaseMs,
        recordId === undefined ? '' : '1',
      ),
    );
    return renewed === 1;
  }

  async releaseLease(chat: ChatRef, lease: TurnLease): Promise<void> {
    await this.run((redis) => scripted(redis).releaseLease(...chatKeys(chat), lease.token));
  }

  async clearMessages(chat: ChatRef, keep?: KeptAnswer): Promise<void> {
    const now = Date.now();
    const { record, argv: kept } = keptIn(chat, keep);
    await this.run((redis) =>
      Promise.all([
        scripted(redis).clearMessages(
          ...chatKeys(chat),
          record,
          now,
          this.defaultTtlSeconds,
          ...kept,
          // Sent again as it is by ioredis after a dropped connection: the script knows it by this.
          randomUUID(),
        ),
        this.index(redis, chat, now),
      ]),
    );
  }

  async deleteChat(chat: ChatRef): Promise<boolean> {
    const [existed] = await this.run((redis) =>
      Promise.all([
        scripted(redis).deleteChat(...chatKeys(chat)),
        redis.zrem(keys.tenant(chat.tenant).chats, chat.chatId),
      ]),
    );
    return existed === 1;
  }

  async listChats(
    tenant: string,
    limit: number,
    cursor?: string,
  ): Promise<{ chats: ChatSummary[]; next?: string }> {
    const index = keys.tenant(tenant).chats;
    let position = decodeCursor(cursor);
    const chats: ChatSummary[] = [];
    return this.run(async (redis) => {
      for (;;) {
        const wanted = limit - chats.length;
        const batch = await indexAfter(redis, index, position, wanted + 1);
        const taken = batch.slice(0, wanted);
        const infos = (await Promise.all(
          taken.map((entry) => scripted(redis).chatInfo(...chatKeys({ tenant, chatId: entry.id }))),
        )) as unknown[][];
        // A chat that expired since it was indexed is dropped from the index as it is met.
        const gone = taken.filter((_, i) => infos[i]?.length === 0).map((entry) => entry.id);
        if (gone.length > 0) await redis.zrem(index, ...gone);
        taken.forEach((entry, i) => {
          const info = infos[i] ?? [];
          if (info.length === 0) return;
          chats.push({
            id: entry.id,
            created_at: toNumber(info[0]),
            updated_at: toNumber(info[1]),
            message_count: toNumber(info[6]),
          });
        });
        position = taken.at(-1) ?? position;
        if (batch.length <= wanted) return { chats };
        if (chats.length >= limit && position) return { chats, next: encodeCursor(position) };
      }
    });
  }

  async deleteAllChats(tenant: string): Promise<number> {
    const tenantKeys = keys.tenant(tenant);
    const deleted = new Set<string>();
    return this.run(async (redis) => {
      for (;;) {
        const ids = await redis.zrange(tenantKeys.chats, '0', '99');
        if (ids.length === 0) break;
        await Promise.all(ids.map((chatId) => scripted(redis).deleteChat(...chatKeys({ tenant, chatId }))));
        await redis.zrem(tenantKeys.chats, ...ids);
        for (const id of ids) deleted.add(id);
      }
      // Sweep what the index missed (a write racing the erasure, an index entry lost).
      const leftovers = await scanAll(redis, tenantKeys.chatPattern);
      await Promise.all(leftovers.map((key) => redis.del(key)));
      // The hash tag is {c:<tenant>:<chat>}; tenant ids hold no ':'.
      for (const key of leftovers)
        deleted.add(key.slice(key.indexOf('{') + 3 + tenant.length + 1, key.indexOf('}')));
      return deleted.size;
    });
  }

  async getUsage(tenant: string): Promise<Usage> {
    const raw = await this.run((redis) => redis.hgetall(keys.tenant(tenant).usage));
    return {
      prompt_tokens: toNumber(raw.prompt_tokens),
      completion_tokens: toNumber(raw.completion_tokens),
      total_tokens: toNumber(raw.total_tokens),
      turns: toNumber(raw.turns),
    };
  }

  async claimIdempotency(
    scope: IdempotencyScope,
    id: string,
    fingerprint: string,
    runningMs: number,
    claimToken = '',
  ): Promise<IdempotencyClaim> {
    const { record, set } = idempotencyKeys(scope, id);
    const reply = (await this.run((redis) =>
      scripted(redis).claimIdempotency(record, set, fingerprint, runningMs, claimToken),
    )) as string;
    if (reply === 'claimed') return { state: 'claimed' };
    const existing = JSON.parse(reply) as IdempotencyRecord;
    if (existing.fingerprint !== fingerprint) return { state: 'mismatch' };
    if (existing.state === 'done' && existing.response) {
      return { state: 'done', response: JSON.parse(existing.response) as StoredResponse };
    }
    return { state: 'running' };
  }

  async completeIdempotency(
    scope: IdempotencyScope,
    id: string,
    fingerprint: string,
    response: StoredResponse,
    keepSeconds: number,
  ): Promise<void> {
    const { record, set } = idempotencyKeys(scope, id);
    await this.run((redis) =>
      scripted(redis).completeIdempotency(record, set, fingerprint, JSON.stringify(response), keepSeconds),
    );
  }

  async abandonIdempotency(scope: IdempotencyScope, id: string): Promise<void> {
    const { record, set } = idempotencyKeys(scope, id);
    await this.run((redis) => scripted(redis).abandonIdempotency(record, set));
  }

  /** Refreshes the chat's entry in its tenant's index (another slot, so not part of the chat's scripts). */
  private index(redis: RedisClient, chat: ChatRef, now: number): Promise<unknown> {
    return redis.zadd(keys.tenant(chat.tenant).chats, String(now), chat.chatId);
  }
}

const chatConfig = loadChatConfig();

/** The repository every handler uses: one per container, over the shared connection. */
export const chatRepository: ChatRepository = new RedisChatRepository({
  ttlDays: chatConfig.ttlDays,
  maxPageBytes: chatConfig.maxPageBytes,
});
