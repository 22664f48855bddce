import {
  type ClientRequest,
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { ConfigError } from './config';

/**
 * OpenAI's HTTP API at the wire: node:http(s) with one keep-alive agent per container, a call's
 * deadline as one timer, the retry policy the `openai` SDK used, and the SSE decoding of a
 * streamed reply. `openai.ts` builds on it; nothing here knows about chats or error codes.
 */

/** The request headers of one API key, built once per key as raw `[name, value, …]` pairs. */
export interface KeyHeaders {
  readonly key: string;
  readonly json: readonly string[];
  readonly stream: readonly string[];
}

/**
 * The keep-alive agent's options. `timeout` is how long a kept-alive socket may sit idle before the
 * agent closes it. Without one node keeps idle sockets forever and ignores a server's
 * `Keep-Alive: timeout=N` hint (the hint can only lower the agent's timeout, to N - 1 s), so the first
 * call after a quiet spell goes out on a socket the server has already closed. 4 s rather than the
 * 5 s of node's global agent: 5 s is the idle limit of node's own server and of uvicorn (which vLLM,
 * LiteLLM and many other OpenAI-compatible servers run on), and uvicorn does not announce it, so 5 s
 * would race it. Node also sets `timeout` on a socket in use, where it only emits a 'timeout' event
 * that nothing here listens to: a call's own limits are the exchange's timer. `lifo` (node's default,
 * spelled out) hands out the most recently used socket, the one least likely to have been closed.
 */
const AGENT_OPTIONS = { keepAlive: true, timeout: 4_000, scheduling: 'lifo' } as const;

/** Where requests go: the base URL, parsed once, and the container's keep-alive agent. */
export class OpenAiEndpoint {
  private readonly hostname: string;
  private readonly port: number;
  private readonly host: string;
  private readonly prefix: string;
  private readonly agent: HttpAgent;
  private readonly send: typeof httpRequest;

  constructor(baseURL: string) {
    let url: URL;
    try {
      url = new URL(baseURL);
    } catch {
      throw new ConfigError(`OPENAI_BASE_URL must be an http(s) URL, got "${baseURL}"`);
    }
    const secure = url.protocol === 'https:';
    if ((!secure && url.protocol !== 'http:') || url.search !== '' || url.hash !== '') {
      throw new ConfigError(
        `OPENAI_BASE_URL must be an http(s) URL without query or fragment, got "${baseURL}"`,
      );
    }
    // An IPv6 literal keeps its brackets in the Host header but not in the address to connect to.
    this.hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = url.port === '' ? (secure ? 443 : 80) : Number(url.port);
    this.host = url.host;
    this.prefix = url.pathname.replace(/\/+$/, '');
    this.agent = secure ? new HttpsAgent(AGENT_OPTIONS) : new HttpAgent(AGENT_OPTIONS);
    this.send = secure ? httpsRequest : httpRequest;
  }

  /**
   * The headers of every request made with `key`. No `Accept-Encoding`: replies come uncompressed,
   * which costs nothing on the wire that matters here and saves inflating every body.
   */
  headersFor(key: string): KeyHeaders {
    const common = [
      'Host',
      this.host,
      'Authorization',
      `Bearer ${key}`,
      'Content-Type',
      'application/json',
      'User-Agent',
      'chat-proxy',
    ];
    return {
      key,
      json: [...common, 'Accept', 'application/json'],
      stream: [...common, 'Accept', 'text/event-stream'],
    };
  }

  /** Starts `POST {base}{path}`; the caller ends it with the body. */
  post(path: string, headers: readonly string[], contentLength: number): ClientRequest {
    const all = headers.slice();
    all.push('Content-Length', String(contentLength));
    return this.send({
      agent: this.agent,
      hostname: this.hostname,
      port: this.port,
      method: 'POST',
      path: this.prefix + path,
      // Raw pairs skip node's per-header bookkeeping; `Host` is ours to send then.
      headers: all,
    });
  }
}

/**
 * One call to OpenAI, over one or more attempts: its deadline (a single timer, restarted by
 * `progressed()` once a stream is flowing), the request in flight, and the caller's abort signal.
 * When the timer fires or the signal aborts, the request in flight is destroyed, so whatever waits
 * on it fails at once; `timedOut` and `aborted` then say why.
 */
export class Exchange {
  timedOut = false;
  aborted = false;
  /** `performance.now()` after which no new attempt starts. */
  readonly deadline: number;
  private request: ClientRequest | undefined;
  /** When the attempt in flight was sent (`performance.now()`). */
  private sentAt = 0;
  /** The socket of the attempt in flight, and how many bytes it had read before that attempt. */
  private socket: Socket | undefined;
  private bytesReadBefore = 0;
  private readonly timer: NodeJS.Timeout;
  private wake: ((resumed: boolean) => void) | undefined;
  private pauseTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly endpoint: OpenAiEndpoint,
    private readonly path: string,
    private readonly body: Buffer,
    timeoutMs: number,
    private readonly signal?: AbortSignal,
  ) {
    this.deadline = performance.now() + timeoutMs;
    this.timer = setTimeout(expire, timeoutMs, this);
    signal?.addEventListener('abort', this);
  }

  get stopped(): boolean {
    return this.timedOut || this.aborted;
  }

  /**
   * Whether the attempt that just failed with `error` died on a kept-alive socket the server had
   * closed while it sat idle, so the server cannot have seen the request and sending it again
   * cannot make OpenAI do (and bill) the work twice. All of these must hold: the attempt went out
   * on a reused socket; it failed with ECONNRESET or EPIPE (node's "socket hang up" included);
   * not one byte of an answer came back on that socket; and it failed within
   * `STALE_SOCKET_WINDOW_MS` of being sent (a closed socket fails within a round trip, whereas a
   * server that took the request and dropped the connection while working on it fails later).
   */
  diedOnStaleSocket(error: unknown): boolean {
    return (
      this.request?.reusedSocket === true &&
      isStaleSocketError(error) &&
      this.socket !== undefined &&
      this.socket.bytesRead === this.bytesReadBefore &&
      performance.now() - this.sentAt < STALE_SOCKET_WINDOW_MS
    );
  }

  /** Sends one attempt; settles with the response once its status and headers are in. */
  send(headers: readonly string[]): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const request = this.endpoint.post(this.path, headers, this.body.length);
      this.request = request;
      this.socket = undefined;
      request.once('socket', (socket: Socket) => {
        this.socket = socket;
        this.bytesReadBefore = socket.bytesRead;
      });
      request.on('response', resolve);
      // Stays attached for the whole exchange: a late socket error must not go unhandled.
      request.on('error', reject);
      this.sentAt = performance.now();
      request.end(this.body);
    });
  }

  /** The stream made progress: the silence allowed starts again. */
  progressed(): void {
    this.timer.refresh();
  }

  /**
   * Waits `ms` before another attempt. False, at once, when that would end past the deadline;
   * false too when the exchange stops while waiting.
   */
  pause(ms: number): Promise<boolean> | false {
    if (performance.now() + ms >= this.deadline) return false;
    return new Promise((resolve) => {
      this.wake = resolve;
      this.pauseTimer = setTimeout(resolve, ms, true);
    });
  }

  /** The caller's signal aborted (the exchange is its listener, so no closure is made per call). */
  handleEvent(): void {
    this.aborted = true;
    this.interrupt();
  }

  /** Tears down what is in flight: the request (and its socket) and any pause. */
  interrupt(): void {
    this.request?.destroy();
    clearTimeout(this.pauseTimer);
    this.wake?.(false);
  }

  /** Ends the exchange normally, leaving a completed response's socket to the agent. */
  finish(): void {
    clearTimeout(this.timer);
    this.signal?.removeEventListener('abort', this);
  }

  /** Ends the exchange early: the response in flight is not wanted any more. */
  cancel(): void {
    this.finish();
    this.request?.destroy();
  }

  /**
   * Ends the exchange once everything wanted of `response` has been read, though the body may
   * not have ended (say its last chunk is still on its way after `[DONE]`): the rest is let run
   * out unread, so its connection goes back to the agent, and is dropped if it has not ended within
   * `REST_OF_BODY_MS`. Nothing waits for it.
   */
  release(response: IncomingMessage): void {
    this.finish();
    if (response.readableEnded) return;
    const timer = setTimeout(cancelExchange, REST_OF_BODY_MS, this);
    timer.unref();
    response.once('close', () => clearTimeout(timer));
    response.resume();
  }
}

/** How soon after it was sent an attempt on a reused socket must fail to count as a stale socket. */
const STALE_SOCKET_WINDOW_MS = 1_000;

/** How long the unread rest of a body may take to end before its connection is dropped. */
const REST_OF_BODY_MS = 1_000;

function expire(exchange: Exchange): void {
  exchange.timedOut = true;
  exchange.interrupt();
}

function cancelExchange(exchange: Exchange): void {
  exchange.cancel();
}

/** A body that ended before it was complete (the connection was cut or destroyed). */
export class IncompleteBodyError extends Error {
  constructor() {
    super('The response body ended before it was complete');
  }
}

/** Reads a whole response body: its Buffers are collected and decoded once, as UTF-8. */
export function readText(response: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
    });
    response.on('end', () => {
      const [only] = chunks;
      resolve(chunks.length === 1 && only !== undefined ? only.toString() : Buffer.concat(chunks).toString());
    });
    // A cut or destroyed body closes without `end` (and, with no 'error' listener, node emits none).
    response.on('close', () => {
      if (!response.complete) reject(new IncompleteBodyError());
    });
  });
}

/** Whether an attempt that failed this way may have died on a socket the server had closed. */
export function isStaleSocketError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

/** Whether an error answer is worth another attempt, as the `openai` SDK decides it. */
export function shouldRetry(status: number, headers: IncomingHttpHeaders): boolean {
  const hint = headers['x-should-retry'];
  if (hint === 'true') return true;
  if (hint === 'false') return false;
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

/** An asked-for wait must be shorter than this; a longer one gets the default backoff instead. */
const MAX_ASKED_WAIT_MS = 60_000;

/**
 * The wait before retry number `retry` (0 for the first), as the `openai` SDK reckons it: what the
 * answer asked for, when that is more than 0 and less than a minute; otherwise 0.5 s doubled per
 * retry, at most 8 s, less up to a quarter of jitter. The ask is `retry-after-ms`, unless that is
 * missing, unreadable or 0, then `retry-after` (seconds or an HTTP date).
 */
export function retryDelayMs(retry: number, headers?: IncomingHttpHeaders): number {
  const asked = askedWaitMs(headers);
  if (asked > 0 && asked < MAX_ASKED_WAIT_MS) return asked;
  return Math.min(500 * 2 ** retry, 8000) * (1 - Math.random() * 0.25);
}

/** The wait the answer asks for; NaN when it asks for none or none that can be read. */
function askedWaitMs(headers: IncomingHttpHeaders | undefined): number {
  const ms = headers?.['retry-after-ms'];
  if (typeof ms === 'string') {
    const value = Number.parseFloat(ms);
    if (value) return value;
  }
  const after = headers?.['retry-after'];
  if (!after) return Number.NaN;
  const seconds = Number.parseFloat(after);
  return Number.isNaN(seconds) ? Date.parse(after) - Date.now() : seconds * 1000;
}

/** OpenAI's own reason in an error body (`{"error":{"message"}}`), if it gave one. */
export function errorMessageOf(body: string): string | undefined {
  try {
    const message = (JSON.parse(body) as { error?: { message?: unknown } } | null)?.error?.message;
    return typeof message === 'string' && message !== '' ? message : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Server-Sent Events decoding: text in (already UTF-8 decoded, split anywhere), the `data` of
 * each complete event out. Lines may end in `\n`, `\r\n` or `\r`; comments and fields other than
 * `data` are skipped; an event's `data` lines are joined with `\n`.
 */
export class SseDecoder {
  /** The start of a line whose end has not arrived yet. */
  private partial = '';
  private data = '';
  private hasData = false;
  /** The last text ended in `\r`: a `\n` starting the next one belongs to that line end. */
  private skipNewline = false;

  /** Decodes `text`, appending the `data` of each event it completes to `events`. */
  push(text: string, events: string[]): void {
    let start = 0;
    if (this.skipNewline) {
      this.skipNewline = false;
      if (text.charCodeAt(0) === 10) start = 1;
    }
    let newline = text.indexOf('\n', start);
    let carriage = text.indexOf('\r', start);
    while (newline !== -1 || carriage !== -1) {
      let end: number;
      let next: number;
      if (carriage === -1 || (newline !== -1 && newline < carriage)) {
        end = newline;
        next = newline + 1;
      } else {
        end = carriage;
        next = carriage + 1;
        if (next === text.length) this.skipNewline = true;
        else if (text.charCodeAt(next) === 10) next += 1;
      }
      const line = text.slice(start, end);
      this.line(this.partial === '' ? line : this.partial + line, events);
      this.partial = '';
      start = next;
      if (newline !== -1 && newline < start) newline = text.indexOf('\n', start);
      if (carriage !== -1 && carriage < start) carriage = text.indexOf('\r', start);
    }
    if (start < text.length) this.partial += text.slice(start);
  }

  private line(line: string, events: string[]): void {
    if (line === '') {
      if (this.hasData) events.push(this.data);
      this.data = '';
      this.hasData = false;
      return;
    }
    if (!line.startsWith('data')) return;
    let value: string;
    if (line.length === 4) value = '';
    else if (line.charCodeAt(4) !== 58)
      return; // a field such as `data2`, not `data:`
    else value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
    this.data = this.hasData ? `${this.data}\n${value}` : value;
    this.hasData = true;
  }
}
