import { AsyncLocalStorage } from 'node:async_hooks';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { type Invoke, loadHandler } from '../support/handlers';

const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.POWERTOOLS_LOG_LEVEL = 'INFO';
process.env.POWERTOOLS_METRICS_DISABLED = 'false';

const postChat = await loadHandler('post-chat');
afterAll(() => fake.close());

/** Every JSON line the functions write to stdout or stderr while `run` runs. */
async function captured(run: () => Promise<unknown>): Promise<Record<string, unknown>[]> {
  const lines: string[] = [];
  const keep = (chunk: string | Uint8Array) => {
    lines.push(
      ...String(chunk)
        .split('\n')
        .filter((line) => line.trim() !== ''),
    );
    return true;
  };
  const spies = [
    vi.spyOn(process.stdout, 'write').mockImplementation(keep),
    vi.spyOn(process.stderr, 'write').mockImplementation(keep),
  ];
  try {
    await run();
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
  return lines.flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

type Emf = {
  _aws: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[] };
};
const metricNames = (lines: Record<string, unknown>[]) =>
  lines
    .filter((line) => '_aws' in line)
    .flatMap((line) => (line as Emf)._aws.CloudWatchMetrics[0]?.Metrics.map((m) => m.Name) ?? []);

let tenant: string;
let chatId: string;
beforeEach(() => {
  fake.reset();
  tenant = uniqueId('t');
  chatId = uniqueId('c');
});
afterEach(() => vi.restoreAllMocks());

/** A fresh post-chat handler that read its configuration with `name` set to `value`. */
async function postChatWith(name: string, value: string): Promise<Invoke> {
  vi.resetModules();
  process.env[name] = value;
  try {
    return await loadHandler('post-chat');
  } finally {
    delete process.env[name];
  }
}

/** A turn on the test's chat, or on `chat`. */
const turn = (
  invoke: Invoke,
  json: Record<string, unknown>,
  headers: Record<string, string> = {},
  chat = chatId,
) =>
  invoke(
    apiEvent({ method: 'POST', resource: '/{chat_id}/chat', chatId: chat, apiKeyId: tenant, json, headers }),
  );

describe('request logs', () => {
  it('log one JSON line per request with route, tenant, chat, status, latencies and tokens', async () => {
    const lines = await captured(() => turn(postChat, { content: 'a very private question' }));

    const request = lines.find((line) => line.message === 'request');
    expect(request).toMatchObject({
      level: 'INFO',
      service: 'chat-proxy',
      route: 'POST /{chat_id}/chat',
      tenant,
      chat_id: chatId,
      status: 200,
      turn: true,
      request_id: expect.any(String),
      latency_ms: expect.any(Number),
      upstream_latency_ms: expect.any(Number),
      prompt_tokens: expect.any(Number),
      completion_tokens: expect.any(Number),
    });
  });

  it('never carry message content or the API key by default', async () => {
    const lines = await captured(() =>
      turn(postChat, { content: 'a very private question' }, { 'x-api-key': 'cp_secret_key_value' }),
    );

    const text = JSON.stringify(lines);
    expect(text).not.toContain('very private');
    expect(text).not.toContain('cp_secret_key_value');
  });

  it('carry the error code of a failed request', async () => {
    fake.enqueue({ status: 500, body: { error: { message: 'boom' } } });

    const lines = await captured(() => turn(postChat, { content: 'hi' }));

    expect(lines.find((line) => line.message === 'request')).toMatchObject({
      status: 502,
      error_code: 'upstream_error',
    });
  });

  it('carry message content when LOG_CONTENT=true', async () => {
    const verbose = await postChatWith('LOG_CONTENT', 'true');

    const lines = await captured(() => turn(verbose, { content: 'debug me' }));

    expect(lines.find((line) => line.message === 'request')?.content).toMatchObject({ user: 'debug me' });
  });
});

describe('EMF metrics', () => {
  it("name the stack's service, as POWERTOOLS_SERVICE_NAME says, in logs and metrics", async () => {
    const staging = await postChatWith('POWERTOOLS_SERVICE_NAME', 'chat-proxy-staging');

    const lines = await captured(() => turn(staging, { content: 'hi' }));

    expect(lines.find((line) => line.message === 'request')?.service).toBe('chat-proxy-staging');
    const emf = lines.filter((line) => '_aws' in line);
    expect(emf.length).toBeGreaterThan(0);
    for (const line of emf) expect(line.service).toBe('chat-proxy-staging');
  });

  it('count turns, upstream latency and tokens per tenant in the ChatProxy namespace', async () => {
    const lines = await captured(() => turn(postChat, { content: 'hi' }));

    const emf = lines.filter((line) => '_aws' in line) as Emf[];
    expect(emf.every((line) => line._aws.CloudWatchMetrics[0]?.Namespace === 'ChatProxy')).toBe(true);
    expect(metricNames(lines)).toEqual(
      expect.arrayContaining([
        'Requests',
        'Turns',
        'StoredTurns',
        'UpstreamLatency',
        'PromptTokens',
        'CompletionTokens',
      ]),
    );
    const perTenant = lines.find((line) => 'PromptTokens' in line && 'tenant' in line);
    expect(perTenant).toMatchObject({ tenant, service: 'chat-proxy' });
  });

  it('count errors by code, busy chats and upstream errors', async () => {
    fake.enqueue({ status: 503, body: { error: { message: 'down' } } });
    const upstream = await captured(() => turn(postChat, { content: 'hi' }));
    fake.respondWith(() => ({ delayMs: 100 }));
    const [busy] = await Promise.all([
      (async () => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        return captured(() => turn(postChat, { content: 'second' }));
      })(),
      turn(postChat, { content: 'first' }),
    ]);

    expect(metricNames(upstream)).toEqual(expect.arrayContaining(['Turns', 'UpstreamErrors', 'Errors']));
    expect(metricNames(upstream)).not.toContain('StoredTurns');
    expect(upstream.find((line) => 'Errors' in line)).toMatchObject({ code: 'upstream_error' });
    expect(metricNames(busy)).toEqual(expect.arrayContaining(['ChatBusy', 'Errors']));
  });

  it('count idempotent replays', async () => {
    const key = { 'Idempotency-Key': uniqueId('k') };
    await turn(postChat, { content: 'once' }, key);

    const lines = await captured(() => turn(postChat, { content: 'once' }, key));

    expect(metricNames(lines)).toContain('IdempotentReplays');
  });
});

describe('the request scope', () => {
  const inLambda = { AWS_LAMBDA_FUNCTION_NAME: 'ChatProxy-PostChat' };
  const requestLine = (lines: Record<string, unknown>[], chat: string) =>
    lines.find((line) => line.message === 'request' && line.chat_id === chat);

  it("in Lambda's default mode (one invocation at a time) logs every fact without an AsyncLocalStorage", async () => {
    const lambda = await postChatWith('AWS_LAMBDA_FUNCTION_NAME', inLambda.AWS_LAMBDA_FUNCTION_NAME);
    const run = vi.spyOn(AsyncLocalStorage.prototype, 'run');

    const lines = await captured(() => turn(lambda, { content: 'hi' }));
    const streamed = await captured(() => turn(lambda, { content: 'again', stream: true }));

    expect(run).not.toHaveBeenCalled();
    for (const [request, extra] of [
      [lines, {}],
      [streamed, { streamed: true }],
    ] as const) {
      expect(requestLine(request, chatId)).toMatchObject({
        tenant,
        status: 200,
        turn: true,
        upstream_latency_ms: expect.any(Number),
        prompt_tokens: expect.any(Number),
        completion_tokens: expect.any(Number),
        ...extra,
      });
    }
    // Outside Lambda (the tests, the local server) each request runs in an AsyncLocalStorage.
    await turn(postChat, { content: 'hi' });
    expect(run).toHaveBeenCalled();
  });

  it('keeps requests apart should they overlap in that mode after all, and warns once', async () => {
    const lambda = await postChatWith('AWS_LAMBDA_FUNCTION_NAME', inLambda.AWS_LAMBDA_FUNCTION_NAME);
    const first = chatId;
    const second = uniqueId('c');
    const third = uniqueId('c');
    fake.respondWith(() => ({ delayMs: 100 }));

    // The second begins once the first is waiting for OpenAI.
    const upstreamReached = async () => {
      while (fake.completions().length === 0) await new Promise((resolve) => setTimeout(resolve, 2));
    };
    const lines = await captured(() =>
      Promise.all([
        turn(lambda, { content: 'first' }),
        (async () => {
          await upstreamReached();
          await turn(lambda, { content: 'second' }, {}, second);
        })(),
      ]),
    );
    fake.reset();
    const later = await captured(() => turn(lambda, { content: 'third' }, {}, third));

    expect(lines.filter((line) => line.level === 'WARN')).toHaveLength(1);
    expect(lines.filter((line) => line.message === 'request')).toHaveLength(2);
    // The one that began first keeps what it noted before the overlap, and its own upstream time.
    expect(requestLine(lines, first)).toMatchObject({
      status: 200,
      tenant,
      upstream_latency_ms: expect.any(Number),
    });
    const full = {
      status: 200,
      tenant,
      turn: true,
      prompt_tokens: expect.any(Number),
      upstream_latency_ms: expect.any(Number),
    };
    expect(requestLine(lines, second)).toMatchObject(full);
    expect(requestLine(later, third)).toMatchObject(full);
    expect(later.filter((line) => line.level === 'WARN')).toHaveLength(0);
  });

  it("tells Lambda's default mode from Lambda Managed Instances and from running outside Lambda", async () => {
    // Imported here: imported with the file, it would make the loggers before the log level is set.
    const { oneInvocationAtATime } = await import('../../functions/shared/observability');
    expect(oneInvocationAtATime(inLambda)).toBe(true);
    // Managed Instances run invocations side by side in one process: they set this variable.
    expect(oneInvocationAtATime({ ...inLambda, AWS_LAMBDA_MAX_CONCURRENCY: '8' })).toBe(false);
    expect(oneInvocationAtATime({})).toBe(false);
  });
});
