import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { countTokens as countO200k, rememberCounts, tokenizerReady } from '../functions/shared/tokens';

/**
 * A small OpenAI-compatible HTTP server with a deterministic built-in model. `npm run dev` uses it
 * when no OPENAI_API_KEY is set (offline mode), and the tests build their fake OpenAI on it, so the
 * handlers always talk to OpenAI over real HTTP through their real client (functions/shared/openai.ts).
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
  /** For a streamed completion: the wait before each chunk. */
  readonly chunkDelayMs?: number;
  /** For a streamed completion: cut the connection after this many content chunks. */
  readonly failAfterChunks?: number;
  /** For a completion: reply with this text instead of the built-in model's. */
  readonly content?: string;
}

export interface StandInOptions {
  readonly port?: number;
  /** Called for every request; return a response to override the built-in model. */
  readonly intercept?: (request: ReceivedRequest) => ScriptedResponse | undefined;
  /** Called when a client goes away before its response is complete. */
  readonly onAborted?: (request: ReceivedRequest) => void;
}

export interface RunningStandIn {
  /** Base URL to give an OpenAI client, `OPENAI_BASE_URL` (`.../v1`). */
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

/**
 * A text's tokens as OpenAI counts them for its current models (o200k_base), so the usage the
 * stand-in reports is what OpenAI would report: the functions store a reply's completion tokens
 * as its size. Remembered per text, as the same texts come back in every prompt of a chat.
 */
export const countTokens: (text: string) => number = rememberCounts(countO200k, 10_000);

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

interface CompletionRequest {
  model?: string;
  messages?: Message[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
}

function completionOf(body: CompletionRequest, override: string | undefined) {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const content = override ?? standInReply(messages);
  const promptTokens = messages.reduce((sum, message) => sum + countTokens(textOf(message.content)) + 4, 0);
  const completionTokens = countTokens(content);
  return {
    id: `chatcmpl-${createHash('sha256').update(JSON.stringify(messages)).digest('hex').slice(0, 24)}`,
    model: body.model ?? 'stand-in',
    content,
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    },
  };
}

function completionBody(body: CompletionRequest, override: string | undefined): unknown {
  const { id, model, content, usage } = completionOf(body, override);
  return {
    id,
    object: 'chat.completion',
    created: 0,
    model,
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, finish_reason: 'stop' }],
    usage,
  };
}

/** The reply split the way a model streams it: a word with its following space per chunk. */
export function streamPieces(content: string): string[] {
  return content.match(/\S+\s*|\s+/g) ?? [];
}

async function streamCompletion(
  res: ServerResponse,
  body: CompletionRequest,
  script: ScriptedResponse | undefined,
): Promise<void> {
  const { id, model, content, usage } = completionOf(body, script?.content);
  const frame = (payload: object) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: 0, model, ...payload })}\n\n`;
  const chunk = (delta: object, finish: string | null) =>
    frame({ choices: [{ index: 0, delta, finish_reason: finish }] });
  res.writeHead(200, { 'content-type': 'text/event-stream', ...script?.headers });
  res.write(chunk({ role: 'assistant', content: '' }, null));
  for (const [index, piece] of streamPieces(content).entries()) {
    if (script?.chunkDelayMs) await new Promise((resolve) => setTimeout(resolve, script.chunkDelayMs));
    if (res.destroyed) return;
    if (script?.failAfterChunks !== undefined && index >= script.failAfterChunks) {
      res.socket?.destroy();
      return;
    }
    res.write(chunk({ content: piece }, null));
  }
  res.write(chunk({}, 'stop'));
  if (body.stream_options?.include_usage) res.write(frame({ choices: [], usage }));
  res.end('data: [DONE]\n\n');
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

function builtIn(request: ReceivedRequest, script: ScriptedResponse | undefined): ScriptedResponse {
  const body = (request.body ?? {}) as Record<string, never>;
  if (request.method === 'POST' && request.path === '/chat/completions')
    return { body: completionBody(body, script?.content) };
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
  await tokenizerReady();
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const request: ReceivedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname.replace(/^\/v1(?=\/)/, ''),
      headers: req.headers,
      body: await readBody(req),
    };
    res.once('close', () => {
      if (!res.writableFinished) options.onAborted?.(request);
    });
    const script = options.intercept?.(request);
    if (script?.hang) return;
    if (script?.delayMs) await new Promise((resolve) => setTimeout(resolve, script.delayMs));
    if (res.destroyed) return;
    const streamed =
      request.path === '/chat/completions' && (request.body as CompletionRequest | undefined)?.stream;
    if (streamed && (script?.status ?? 200) < 300 && script?.body === undefined) {
      await streamCompletion(res, request.body as CompletionRequest, script);
      return;
    }
    send(
      res,
      script?.body !== undefined || script?.status !== undefined
        ? { ...script }
        : { ...script, ...builtIn(request, script) },
    );
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
