import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type ReceivedRequest, startOpenAiStandIn } from '../local/openai-stand-in';
import { onCleanup } from './lifecycle';

/**
 * The conversation every bench chat holds: the same user message and the same reply, turn after
 * turn. The stand-in always answers `REPLY`, so a turn appends exactly the pair the chats were
 * seeded with, and a chat's context window keeps the same size however many turns it takes.
 */
export const USER_MESSAGE =
  'Could you explain, briefly, how a write-ahead log lets a database recover after a crash, and what it costs?';

export const REPLY =
  'A write-ahead log records every change before the change is applied to the data files. After a crash, ' +
  'the database replays the log from the last checkpoint: committed changes that never reached the data ' +
  'files are redone, and uncommitted ones are rolled back, so the data ends up exactly as of the last ' +
  'commit. The cost is an extra sequential write per transaction and an fsync at commit, which bounds ' +
  'commit latency by the disk, plus the work of checkpointing so that recovery does not have to replay ' +
  'the whole history.';

/** Stored messages in the chat that "just fills the budget". */
export const FULL_CHAT_MESSAGES = 100;
/** Stored messages in the long chat. */
export const LONG_CHAT_MESSAGES = 10_000;

/** Tokens the chat format adds to prime the reply (functions/shared/tokens.ts REPLY_PRIMING_TOKENS). */
const PRIMING_TOKENS = 3;

/**
 * MAX_CONTEXT_TOKENS such that a chat of `FULL_CHAT_MESSAGES` stored messages plus the new message
 * fills the budget exactly: the whole chat is sent, and one more pair would not fit.
 */
export function contextBudget(messageTokens: (content: string) => number): number {
  const pair = messageTokens(USER_MESSAGE) + messageTokens(REPLY);
  return (FULL_CHAT_MESSAGES / 2) * pair + messageTokens(USER_MESSAGE) + PRIMING_TOKENS;
}

/** What a chat completion request carried, as the stand-in received it. */
export interface CompletionRequestBody {
  readonly model: string;
  readonly messages: { role: string; content: unknown }[];
  readonly stream?: boolean;
  readonly [field: string]: unknown;
}

/** The zero-latency OpenAI stand-in the handlers and the direct calls both talk to. */
export interface Upstream {
  readonly baseURL: string;
  /** Starts keeping the body of each chat completion request (the latest one only). */
  capture(): void;
  /** The latest captured body, and stops capturing. */
  take(): CompletionRequestBody | undefined;
  /** Chat completion requests served so far. */
  readonly served: () => number;
}

export async function startUpstream(): Promise<Upstream> {
  let capturing = false;
  let last: CompletionRequestBody | undefined;
  let served = 0;
  const standIn = await startOpenAiStandIn({
    intercept: (request: ReceivedRequest) => {
      if (request.path !== '/chat/completions') return undefined;
      served += 1;
      if (capturing) last = request.body as CompletionRequestBody;
      return { content: REPLY };
    },
  });
  onCleanup('stop the OpenAI stand-in', () => standIn.close());
  return {
    baseURL: standIn.baseURL,
    capture: () => {
      capturing = true;
      last = undefined;
    },
    take: () => {
      capturing = false;
      const body = last;
      last = undefined;
      return body;
    },
    served: () => served,
  };
}

/** The key of the bench's direct calls (B), so an upstream process can tell them from the proxy's. */
export const DIRECT_API_KEY = 'sk-bench-direct';

/** The stand-in in a process of its own (bench/upstream-process.ts). */
export interface RemoteUpstream {
  readonly baseURL: string;
  readonly pid: number;
  /** The body of the latest chat completion request the proxy sent, and forgets it. */
  take(): Promise<CompletionRequestBody | undefined>;
}

export async function startUpstreamProcess(): Promise<RemoteUpstream> {
  const entry = fileURLToPath(new URL('./upstream-process.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { stdio: ['ignore', 'pipe', 'inherit'] });
  onCleanup('stop the OpenAI stand-in process', () => {
    child.kill('SIGTERM');
  });
  const lines = createInterface({ input: child.stdout as NonNullable<typeof child.stdout> });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    child.once('exit', (code) =>
      reject(new Error(`the stand-in process exited (${code}) before it listened`)),
    );
  });
  const { baseURL, side } = JSON.parse(first) as { baseURL: string; side: string };
  return {
    baseURL,
    pid: child.pid as number,
    take: async () => ((await (await fetch(side)).json()) as CompletionRequestBody | null) ?? undefined,
  };
}
