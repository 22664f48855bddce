import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small OpenAI-compatible HTTP server with a deterministic built-in model. `npm run dev` uses it
 * when no OPENAI_API_KEY is set (offline mode), and the tests build their fake OpenAI on it, so the
 * handlers always talk to OpenAI over real HTTP through the real SDK.
 */

/** A request as the stand-in received it. */
export interface ReceivedRequest {
  readonly method: string;
  /** Path without the optional `/v1` prefix, e.g. `/chat/completions`. */
  readonly path: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: unknown;
}

/** What to answer instead of the built-in model (tests script failures and delays with it). */
export interface ScriptedResponse {
  readonly status?: number;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
  /** Wait this long before answering. */
  readonly delayMs?: number;
  /** Never answer (the client's timeout must fire). */
  readonly hang?: boolean;
}

export interface StandInOptions {
  readonly port?: number;
  /** Called for every request; return a response to override the built-in model. */
  readonly intercept?: (request: ReceivedRequest) => ScriptedResponse | undefined;
}

export interface RunningStandIn {
  /** Base URL to give the OpenAI SDK (`.../v1`). */
  readonly baseURL: string;
  readonly server: Server;
  close(): Promise<void>;
}

type Part = { type?: string; text?: string };
type Message = { role?: string; content?: string | Part[] | null };

function textOf(content: Message['content']): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((part) => (part?.type === 'text' ? (part.text ?? '') : '[image]')).join(' ');
  }
  return '';
}

/** A rough but deterministic token count: one token per word or punctuation run. */
export function countTokens(text: string): number {
  return text.match(/\w+|[^\s\w]+/g)?.length ?? 0;
}

/** The built-in model's reply: it echoes the last user message, so results are predictable. */
export function standInReply(messages: Message[]): string {
  const lastUser = [...messages].reverse().find((message) => message.role === 'user');
  const text = textOf(lastUser?.content).trim();
  const hasImage =
    Array.isArray(lastUser?.content) && lastUser.content.some((part) => part.type === 'image_url');
  const turn = messages.filter((message) => message.role === 'user').length;
  const subject = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  return `${hasImage ? 'I see an image. ' : ''}You said: "${subject}" (offline stand-in model, turn ${turn})`;
}

function completionBody(body: { model?: string; messages?: Message[] }): unknown {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const content = standInReply(messages);
  const promptTokens = messages.reduce((sum, message) => sum + countTokens(textOf(message.content)) + 4, 0);
  const completionTokens = countTokens(content);
  const id = createHash('sha256').update(JSON.stringify(messages)).digest('hex').slice(0, 24);
  return {
    id: `chatcmpl-${id}`,
    object: 'chat.completion',
    created: 0,
    model: body.model ?? 'stand-in',
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, finish_reason: 'stop' }],
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    },
  };
}

const MODERATION_CATEGORIES = [
  'harassment',
  'harassment/threatening',
  'hate',
  'hate/threatening',
  'illicit',
  'illicit/violent',
  'self-harm',
  'self-harm/instructions',
  'self-harm/intent',
  'sexual',
  'sexual/minors',
  'violence',
  'violence/graphic',
] as const;

function moderationBody(body: { model?: string; input?: unknown }): unknown {
  const inputs = Array.isArray(body.input) ? body.input : [body.input];
  const id = createHash('sha256')
    .update(JSON.stringify(body.input ?? ''))
    .digest('hex')
    .slice(0, 24);
  return {
    id: `modr-${id}`,
    model: body.model ?? 'omni-moderation-latest',
    results: inputs.map(() => ({
      flagged: false,
      categories: Object.fromEntries(MODERATION_CATEGORIES.map((name) => [name, false])),
      category_scores: Object.fromEntries(MODERATION_CATEGORIES.map((name) => [name, 0])),
      category_applied_input_types: Object.fromEntries(MODERATION_CATEGORIES.map((name) => [name, ['text']])),
    })),
  };
}

function builtIn(request: ReceivedRequest): ScriptedResponse {
  const body = (request.body ?? {}) as Record<string, never>;
  if (request.method === 'POST' && request.path === '/chat/completions')
    return { body: completionBody(body) };
  if (request.method === 'POST' && request.path === '/moderations') return { body: moderationBody(body) };
  return {
    status: 404,
    body: {
      error: { message: `Unknown route ${request.method} ${request.path}`, type: 'invalid_request_error' },
    },
  };
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function send(res: ServerResponse, response: ScriptedResponse): void {
  res.writeHead(response.status ?? 200, { 'content-type': 'application/json', ...response.headers });
  res.end(JSON.stringify(response.body ?? {}));
}

/** Starts the stand-in on 127.0.0.1 (a free port unless `port` is given). */
export async function startOpenAiStandIn(options: StandInOptions = {}): Promise<RunningStandIn> {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const request: ReceivedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname.replace(/^\/v1(?=\/)/, ''),
      headers: req.headers,
      body: await readBody(req),
    };
    const response = options.intercept?.(request) ?? builtIn(request);
    if (response.hang) return;
    if (response.delayMs) await new Promise((resolve) => setTimeout(resolve, response.delayMs));
    if (!res.destroyed) send(res, response);
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
