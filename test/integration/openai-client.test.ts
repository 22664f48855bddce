import { getEventListeners } from 'node:events';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { inspect } from 'node:util';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openAiError, startFakeOpenAi } from '../support/fake-openai';
import { reply as secretReply, startFakeSecretsManager } from '../support/fake-secrets-manager';

type Client = typeof import('../../functions/shared/openai');
type StreamEvent = import('../../functions/shared/openai').StreamEvent;
type ReplyStream = import('../../functions/shared/openai').ReplyStream;

/** A request as the wire server received it. */
interface WireRequest {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The body's bytes, exactly as received. */
  readonly raw: Buffer;
  readonly body: string;
  /** Its connection closed before its response was finished. */
  cut: boolean;
}

type Reply = (res: ServerResponse, request: WireRequest, index: number) => unknown;

/**
 * An HTTP server whose every byte the test writes, for what the fake OpenAI cannot script: SSE
 * split anywhere, bodies that stop half-way, sockets dropped on purpose. It counts connections
 * and the responses whose connection closed before they were finished.
 */
async function startWireServer() {
  const requests: WireRequest[] = [];
  let reply: Reply = (res) => res.end('{}');
  let connections = 0;
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks);
    const request: WireRequest = {
      path: req.url ?? '',
      headers: req.headers,
      raw,
      body: raw.toString(),
      cut: false,
    };
    requests.push(request);
    res.once('close', () => {
      request.cut = !res.writableFinished;
    });
    res.socket?.setNoDelay(true);
    await reply(res, request, requests.length - 1);
  });
  server.on('connection', () => {
    connections += 1;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    connections: () => connections,
    /** Requests of this test whose connection closed before their response was finished. */
    cut: () => requests.filter((request) => request.cut).length,
    respond(next: Reply) {
      reply = next;
    },
    reset() {
      requests.length = 0;
      connections = 0;
      reply = (res) => res.end('{}');
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Writes `pieces` one at a time with a pause between them, so each goes out on its own. */
async function writeApart(res: ServerResponse, pieces: (string | Buffer)[], gapMs = 15): Promise<void> {
  for (const piece of pieces) {
    if (res.destroyed) return;
    res.write(piece);
    await sleep(gapMs);
  }
  res.end();
}

const frame = (payload: unknown) => `data: ${JSON.stringify(payload)}\n\n`;
const delta = (content: string) =>
  frame({ choices: [{ index: 0, delta: { content }, finish_reason: null }] });
const finish = frame({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
const usage = frame({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } });
const SSE = { 'content-type': 'text/event-stream' };
const completion = (content: string) =>
  JSON.stringify({
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
  });

/** Requests of this test whose client went away before the fake's response was finished. */
const abortedNow = () => fake.aborted.filter((request) => fake.requests.includes(request)).length;

/** A complete streamed reply: "Hi", its finish reason, the usage and [DONE]. */
const wholeReply = [delta('Hi'), finish, usage, 'data: [DONE]\n\n'];
const hiThenEnd: StreamEvent[] = [
  { type: 'delta', content: 'Hi' },
  { type: 'end', tokens: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 }, replyTokens: 2 },
];

const KEY = 'sk-client-test-key';
const KEY_ARN = 'arn:aws:secretsmanager:us-east-1:000000000000:secret:openai-key-AbCdEf';
const fake = await startFakeOpenAi();
const wire = await startWireServer();
const secretsManager = await startFakeSecretsManager();

afterAll(async () => {
  await fake.close();
  await wire.close();
  await secretsManager.close();
});

beforeEach(() => {
  fake.reset();
  wire.reset();
  secretsManager.reset();
});

afterEach(() => {
  vi.useRealTimers();
});

/** A fresh client module, configured from `env` as a function's environment would configure it. */
async function loadClient(env: Record<string, string | undefined>): Promise<Client> {
  const defaults = {
    OPENAI_API_KEY: KEY,
    OPENAI_SECRET_ARN: undefined,
    OPENAI_BASE_URL: fake.baseURL,
    OPENAI_TIMEOUT_MS: '2000',
    OPENAI_MAX_RETRIES: '0',
    OPENAI_MODEL: 'gpt-test',
    OPENAI_TEMPERATURE: undefined,
    OPENAI_MAX_TOKENS: undefined,
  };
  for (const [name, value] of Object.entries({ ...defaults, ...env })) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  vi.resetModules();
  return import('../../functions/shared/openai');
}

/** Everything a streamed reply yields, in order. */
async function drain(events: ReplyStream): Promise<StreamEvent[]> {
  const seen: StreamEvent[] = [];
  for await (const event of events) seen.push(event);
  return seen;
}

/** The error a promise rejects with (the test fails if it resolves). */
async function failureOf(
  promise: Promise<unknown>,
): Promise<Error & { code?: string; retryAfterSeconds?: string }> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

const user = { role: 'user', content: 'Hi' } as const;

describe('the OpenAI client', () => {
  let client: Client;

  describe('what it sends', () => {
    it('sends the model, the messages in order with stored ones spliced in as given, and the limits', async () => {
      client = await loadClient({ OPENAI_TEMPERATURE: '0.3', OPENAI_MAX_TOKENS: '99' });
      const stored = '{"role":"assistant","content":"from storage, \\"as is\\""}';

      await client.complete([
        { role: 'system', content: 'Be brief.' },
        '{"role":"user","content":"earlier"}',
        stored,
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Look' },
            { type: 'image_url', image_url: { url: 'https://example.com/a.png' } },
          ],
        },
      ]);

      const [request] = fake.requestsTo('/chat/completions');
      expect(request?.body).toEqual({
        model: 'gpt-test',
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'earlier' },
          { role: 'assistant', content: 'from storage, "as is"' },
          {
            role: 'user',
            content: [
              { type: 'text', text: 'Look' },
              { type: 'image_url', image_url: { url: 'https://example.com/a.png' } },
            ],
          },
        ],
        temperature: 0.3,
        max_completion_tokens: 99,
      });
    });

    it('copies stored messages given as UTF-8 bytes in unchanged, first, last or side by side', async () => {
      client = await loadClient({});
      const bytes = (json: string) => Buffer.from(json);

      await client.complete([
        bytes('{"role":"user","content":"café ☕"}'),
        bytes('{"role":"assistant","content":"two"}'),
        user,
        bytes('{"role":"assistant","content":"last"}'),
      ]);

      expect(fake.completions()[0]?.messages).toEqual([
        { role: 'user', content: 'café ☕' },
        { role: 'assistant', content: 'two' },
        user,
        { role: 'assistant', content: 'last' },
      ]);
    });

    it("uses a chat's own model, temperature and max tokens over the deployment's", async () => {
      client = await loadClient({ OPENAI_TEMPERATURE: '0.3', OPENAI_MAX_TOKENS: '99' });

      await client.complete([user], { model: 'gpt-other', temperature: 1.5, maxTokens: 7 });

      expect(fake.completions()[0]).toMatchObject({
        model: 'gpt-other',
        temperature: 1.5,
        max_completion_tokens: 7,
      });
    });

    it('leaves temperature and max_completion_tokens out when neither is set', async () => {
      client = await loadClient({});

      await client.complete([user]);

      expect(fake.completions()[0]).toEqual({ model: 'gpt-test', messages: [user] });
    });

    it('asks for a stream with usage included', async () => {
      client = await loadClient({});

      await drain(await client.streamCompletion([user], new AbortController().signal));

      expect(fake.completions()[0]).toEqual({
        model: 'gpt-test',
        messages: [user],
        stream: true,
        stream_options: { include_usage: true },
      });
    });

    it('sends the key, JSON with its length in bytes, our user agent, and no Accept-Encoding', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => res.end(completion('ok')));
      const asked = { role: 'user', content: 'naïve € 😀' } as const;
      const stored = '{"role":"assistant","content":"déjà vu ☕"}';

      await client.complete([asked, Buffer.from(stored)]);

      const [request] = wire.requests;
      const expected = Buffer.from(`{"model":"gpt-test","messages":[${JSON.stringify(asked)},${stored}]}`);
      expect(request?.path).toBe('/v1/chat/completions');
      expect(request?.raw.equals(expected)).toBe(true);
      expect(request?.headers).toMatchObject({
        authorization: `Bearer ${KEY}`,
        'content-type': 'application/json',
        'content-length': String(expected.length),
        'user-agent': 'chat-proxy',
      });
      expect(request?.headers).not.toHaveProperty('accept-encoding');
      expect(JSON.parse(request?.body ?? '')).toEqual({
        model: 'gpt-test',
        messages: [asked, { role: 'assistant', content: 'déjà vu ☕' }],
      });
    });

    it('keeps one connection alive for consecutive calls', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => res.end(completion('ok')));

      for (let i = 0; i < 3; i += 1) await client.complete([user]);

      expect(wire.requests).toHaveLength(3);
      expect(wire.connections()).toBe(1);
    });

    it('keeps one connection alive for consecutive streamed replies, the body ending after [DONE] or with it', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res, _request, index) => {
        res.writeHead(200, SSE);
        if (index === 0) return writeApart(res, wholeReply);
        res.end(wholeReply.join(''));
      });

      for (let i = 0; i < 3; i += 1) {
        expect(await drain(await client.streamCompletion([user], new AbortController().signal))).toEqual(
          hiThenEnd,
        );
        // The body's last chunk may still be on its way after [DONE]: the connection is free after it.
        await sleep(60);
      }

      expect(wire.connections()).toBe(1);
      expect(wire.cut()).toBe(0);
    });

    it('sends a key without the whitespace around it, as held in the environment or in a secret', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL, OPENAI_API_KEY: ` ${KEY}\n` });
      wire.respond((res) => res.end(completion('ok')));
      await client.complete([user]);

      secretsManager.put(KEY_ARN, `${KEY}\r\n`);
      client = await loadClient({
        ...secretsManager.env,
        OPENAI_BASE_URL: wire.baseURL,
        OPENAI_API_KEY: undefined,
        OPENAI_SECRET_ARN: KEY_ARN,
      });
      await client.complete([user]);

      expect(wire.requests.map((request) => request.headers.authorization)).toEqual([
        `Bearer ${KEY}`,
        `Bearer ${KEY}`,
      ]);
    });

    it('moderates a text: POST /moderations {model, input}, answered as {id, model, results}', async () => {
      client = await loadClient({ OPENAI_MODERATION_MODEL: 'omni-test' });

      const result = await client.moderate('some text');

      expect(fake.requestsTo('/moderations')[0]?.body).toEqual({ model: 'omni-test', input: 'some text' });
      expect(result).toEqual({
        id: expect.stringMatching(/^modr-/),
        model: 'omni-test',
        results: [expect.any(Object)],
      });
    });
  });

  describe('a completion', () => {
    it('answers the content and the token usage', async () => {
      client = await loadClient({});
      fake.enqueue({ content: 'Hello back' });

      expect(await client.complete([user])).toEqual({
        content: 'Hello back',
        tokens: { prompt_tokens: expect.any(Number), completion_tokens: 2, total_tokens: expect.any(Number) },
        replyTokens: 2,
      });
    });

    it("counts the reply's own tokens without reasoning, audio or rejected prediction tokens", async () => {
      client = await loadClient({});
      fake.enqueue({
        body: {
          id: 'c',
          object: 'chat.completion',
          choices: [{ index: 0, message: { role: 'assistant', content: 'Done.' }, finish_reason: 'stop' }],
          usage: {
            prompt_tokens: 5,
            completion_tokens: 100,
            total_tokens: 105,
            completion_tokens_details: {
              reasoning_tokens: 90,
              audio_tokens: 0,
              rejected_prediction_tokens: 8,
            },
          },
        },
      });

      const completion = await client.complete([user]);

      expect(completion.replyTokens).toBe(2);
      expect(completion.tokens).toEqual({ prompt_tokens: 5, completion_tokens: 100, total_tokens: 105 });
    });

    it('gives no reply size when OpenAI reports no usage', async () => {
      client = await loadClient({});
      fake.enqueue({
        body: {
          id: 'c',
          object: 'chat.completion',
          choices: [{ index: 0, message: { role: 'assistant', content: 'Done.' }, finish_reason: 'stop' }],
        },
      });

      expect(await client.complete([user])).toEqual({
        content: 'Done.',
        tokens: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
      });
    });

    it('decodes a body whose multi-byte characters are split across TCP chunks', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      const body = Buffer.from(completion('€ and 😀'));
      const at = body.indexOf(Buffer.from('😀')) + 2;
      wire.respond((res) => writeApart(res, [body.subarray(0, at), body.subarray(at)]));

      expect((await client.complete([user])).content).toBe('€ and 😀');
    });
  });

  describe('errors', () => {
    it.each([400, 422])("maps a %i to upstream_rejected with OpenAI's reason", async (status) => {
      client = await loadClient({});
      fake.enqueue({ status, body: openAiError('Invalid image URL', 'invalid_request_error') });

      const error = await failureOf(client.complete([user]));

      expect(error).toMatchObject({
        code: 'upstream_rejected',
        message: 'OpenAI rejected the request: Invalid image URL',
      });
    });

    it('keeps at most 500 characters of the reason, or names the status when there is none', async () => {
      client = await loadClient({});
      fake.enqueue(
        { status: 400, body: openAiError('x'.repeat(600)) },
        { status: 400, body: 'not an error object' },
      );

      expect((await failureOf(client.complete([user]))).message).toBe(
        `OpenAI rejected the request: ${'x'.repeat(500)}`,
      );
      expect((await failureOf(client.complete([user]))).message).toBe(
        'OpenAI rejected the request: status 400',
      );
    });

    it.each([401, 403])(
      'maps a %i to upstream_auth_failed, without the key in the message',
      async (status) => {
        client = await loadClient({});
        fake.enqueue({ status, body: openAiError(`Incorrect API key provided: ${KEY}`, 'invalid_api_key') });

        const error = await failureOf(client.complete([user]));

        expect(error).toMatchObject({
          code: 'upstream_auth_failed',
          message: 'OpenAI rejected the configured API key',
        });
        // Nothing reachable from the error (message, stack, cause, fields) holds the key.
        expect(inspect(error, { depth: null })).not.toContain(KEY);
      },
    );

    it('maps a 429 to upstream_rate_limited, passing Retry-After on', async () => {
      client = await loadClient({});
      fake.enqueue(
        { status: 429, body: openAiError('slow down'), headers: { 'retry-after': '7' } },
        { status: 429, body: openAiError('slow down') },
      );

      expect(await failureOf(client.complete([user]))).toMatchObject({
        code: 'upstream_rate_limited',
        retryAfterSeconds: '7',
      });
      expect(await failureOf(client.complete([user]))).toMatchObject({
        code: 'upstream_rate_limited',
        retryAfterSeconds: undefined,
      });
    });

    it.each([404, 500, 503])('maps a %i to upstream_error naming the status', async (status) => {
      client = await loadClient({});
      fake.enqueue({ status, body: openAiError('boom') });

      expect(await failureOf(client.complete([user]))).toMatchObject({
        code: 'upstream_error',
        message: `OpenAI answered with status ${status}`,
      });
    });

    it('maps a 2xx without a message to upstream_invalid_response', async () => {
      client = await loadClient({});
      fake.enqueue({ body: { id: 'x', object: 'chat.completion', choices: [] } });

      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_invalid_response' });
    });

    it('maps a 2xx body that is not JSON to upstream_invalid_response', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => res.end('<html>gateway</html>'));

      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_invalid_response' });
      expect(await failureOf(client.moderate('x'))).toMatchObject({ code: 'upstream_invalid_response' });
    });

    it('maps a moderation answer without an id, a model and a results array to upstream_invalid_response', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });

      for (const body of [
        '{}',
        'null',
        '[]',
        '{"id":"modr-1","model":"omni","results":{}}',
        '{"id":"modr-1","results":[]}',
        '{"id":1,"model":"omni","results":[]}',
      ]) {
        wire.respond((res) => res.end(body));
        expect(await failureOf(client.moderate('x')), body).toMatchObject({
          code: 'upstream_invalid_response',
          message: 'OpenAI answered without a result',
        });
      }
    });

    it.each([
      ['a line break', 'sk-first\nsecond'],
      ['a control character', 'sk-\u0007key'],
      ['a character beyond Latin-1', 'sk-clé-€'],
    ])(
      'maps a key holding %s to upstream_auth_failed, sending nothing and retrying nothing',
      async (_, key) => {
        client = await loadClient({ OPENAI_API_KEY: key, OPENAI_MAX_RETRIES: '2' });

        const error = await failureOf(client.complete([user]));

        expect(error).toMatchObject({ code: 'upstream_auth_failed' });
        expect(inspect(error, { depth: null })).not.toContain(key);
        expect(fake.requests).toEqual([]);
      },
    );

    it('reads a secret-held key that cannot be sent once more, then maps it to upstream_auth_failed', async () => {
      const key = 'sk-first\nsecond';
      secretsManager.put(KEY_ARN, key);
      client = await loadClient({
        ...secretsManager.env,
        OPENAI_API_KEY: undefined,
        OPENAI_SECRET_ARN: KEY_ARN,
        OPENAI_MAX_RETRIES: '2',
      });

      const error = await failureOf(client.streamCompletion([user], new AbortController().signal));

      expect(error).toMatchObject({ code: 'upstream_auth_failed' });
      expect(inspect(error, { depth: null })).not.toContain(key);
      expect(secretsManager.readsOf(KEY_ARN)).toBe(2);
      expect(fake.requests).toEqual([]);
    });

    it('uses a secret-held key that could not be sent once a second read gives a good one', async () => {
      secretsManager.enqueue(KEY_ARN, secretReply.secret('sk-\u0007'));
      secretsManager.put(KEY_ARN, KEY);
      client = await loadClient({
        ...secretsManager.env,
        OPENAI_API_KEY: undefined,
        OPENAI_SECRET_ARN: KEY_ARN,
      });

      await client.complete([user]);

      expect(secretsManager.readsOf(KEY_ARN)).toBe(2);
      expect(fake.requests.map((request) => request.headers.authorization)).toEqual([`Bearer ${KEY}`]);
    });

    it('maps a connection refused to upstream_unreachable', async () => {
      const closed = await startWireServer();
      await closed.close();
      client = await loadClient({ OPENAI_BASE_URL: closed.baseURL });

      expect(await failureOf(client.complete([user]))).toMatchObject({
        code: 'upstream_unreachable',
        message: 'OpenAI could not be reached',
      });
    });

    it('maps a body cut off half-way to upstream_incomplete', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => {
        res.writeHead(200, { 'content-length': '1000' });
        res.write('{"choices":');
        setTimeout(() => res.socket?.destroy(), 20);
      });

      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_incomplete' });
    });
  });

  describe('retries', () => {
    const fast = { 'retry-after-ms': '10' };

    it.each([408, 409, 429, 500, 503])('retries a %i, then answers', async (status) => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '2' });
      fake.enqueue({ status, body: openAiError('again'), headers: fast });

      expect((await client.complete([user])).content).toContain('You said');
      expect(fake.requests).toHaveLength(2);
    });

    it('stops after OPENAI_MAX_RETRIES and answers the last error', async () => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '2' });
      fake.respondWith(() => ({ status: 500, body: openAiError('down'), headers: fast }));

      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_error' });
      expect(fake.requests).toHaveLength(3);
    });

    it('does not retry what OpenAI refused for good, nor anything with the default of 0 retries', async () => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '2' });
      fake.enqueue({ status: 400, body: openAiError('bad') }, { status: 401, body: openAiError('key') });
      await failureOf(client.complete([user]));
      await failureOf(client.complete([user]));
      expect(fake.requests).toHaveLength(2);

      client = await loadClient({});
      fake.reset();
      fake.enqueue({ status: 500, body: openAiError('down'), headers: fast });
      await failureOf(client.complete([user]));
      expect(fake.requests).toHaveLength(1);
    });

    it('obeys x-should-retry either way', async () => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '2' });
      fake.enqueue({
        status: 500,
        body: openAiError('down'),
        headers: { ...fast, 'x-should-retry': 'false' },
      });
      await failureOf(client.complete([user]));
      expect(fake.requests).toHaveLength(1);

      fake.reset();
      fake.enqueue({
        status: 400,
        body: openAiError('try again'),
        headers: { ...fast, 'x-should-retry': 'true' },
      });
      await client.complete([user]);
      expect(fake.requests).toHaveLength(2);
    });

    it('waits what retry-after asks, in seconds or as an HTTP date', async () => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '2', OPENAI_TIMEOUT_MS: '5000' });
      fake.enqueue({ status: 429, body: openAiError('wait'), headers: { 'retry-after': '0.3' } });
      let started = performance.now();
      await client.complete([user]);
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);

      fake.reset();
      const inTwoSeconds = new Date(Date.now() + 2000).toUTCString();
      fake.enqueue({ status: 503, body: openAiError('wait'), headers: { 'retry-after': inTwoSeconds } });
      started = performance.now();
      await client.complete([user]);
      const waited = performance.now() - started;
      expect(waited).toBeGreaterThanOrEqual(900);
      expect(waited).toBeLessThan(4000);
    });

    it('backs off instead of waiting more than a minute', async () => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '1', OPENAI_TIMEOUT_MS: '5000' });
      fake.enqueue({ status: 429, body: openAiError('wait'), headers: { 'retry-after': '120' } });

      const started = performance.now();
      await client.complete([user]);

      const waited = performance.now() - started;
      expect(waited).toBeGreaterThanOrEqual(370);
      expect(waited).toBeLessThan(3000);
    });

    it('answers the error at once when the wait would end past the deadline', async () => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '2', OPENAI_TIMEOUT_MS: '4000' });
      fake.enqueue({ status: 429, body: openAiError('wait'), headers: { 'retry-after': '5' } });

      const started = performance.now();
      const error = await failureOf(client.complete([user]));

      // Well before the deadline, let alone the 5 s asked for.
      expect(performance.now() - started).toBeLessThan(2000);
      expect(error).toMatchObject({ code: 'upstream_rate_limited', retryAfterSeconds: '5' });
      expect(fake.requests).toHaveLength(1);
    });

    it('retries a connection that fails before any answer', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL, OPENAI_MAX_RETRIES: '1' });
      wire.respond((res, _request, index) => {
        if (index === 0) res.socket?.destroy();
        else res.end(completion('second time'));
      });

      expect((await client.complete([user])).content).toBe('second time');
      expect(wire.requests).toHaveLength(2);
    });

    it('sends again, even with 0 retries, a request that died on a kept-alive connection the server dropped', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res, _request, index) => {
        if (index === 1) res.socket?.destroy();
        else res.end(completion(`answer ${index}`));
      });

      expect((await client.complete([user])).content).toBe('answer 0');
      expect((await client.complete([user])).content).toBe('answer 2');
      expect(wire.connections()).toBe(2);
    });

    it('sends such a request again only once per call', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res, _request, index) => {
        if (index === 2 || index === 3) res.socket?.destroy();
        else res.end(completion(`answer ${index}`));
      });
      // Two kept-alive connections, so the second attempt goes out on a reused one too.
      await Promise.all([client.complete([user]), client.complete([user])]);
      expect(wire.connections()).toBe(2);

      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_unreachable' });
      expect(wire.requests).toHaveLength(4);
    });

    it('does not send again a request whose kept-alive connection died after part of an answer came back', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res, _request, index) => {
        if (index === 1) res.socket?.end('HTTP/1.1 200 OK\r\n');
        else res.end(completion(`answer ${index}`));
      });
      await client.complete([user]);

      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_unreachable' });
      expect(wire.requests).toHaveLength(2);
      expect(wire.connections()).toBe(1);
    });

    it('does not send again a request whose kept-alive connection died a while after it was sent', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL, OPENAI_TIMEOUT_MS: '10000' });
      wire.respond((res, _request, index) => {
        if (index === 1) setTimeout(() => res.socket?.destroy(), 1500);
        else res.end(completion(`answer ${index}`));
      });
      await client.complete([user]);

      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_unreachable' });
      expect(wire.requests).toHaveLength(2);
    });

    it('retries a stream before it starts, never after', async () => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '2' });
      fake.enqueue({ status: 502, body: openAiError('down'), headers: fast });
      const events = await drain(await client.streamCompletion([user], new AbortController().signal));
      expect(events.at(-1)?.type).toBe('end');
      expect(fake.requests).toHaveLength(2);

      fake.reset();
      fake.enqueue({ content: 'a b c d', failAfterChunks: 2, chunkDelayMs: 10 });
      const cut = await client.streamCompletion([user], new AbortController().signal);
      expect(await failureOf(drain(cut))).toMatchObject({ code: 'upstream_incomplete' });
      expect(fake.requests).toHaveLength(1);
      await expect.poll(() => abortedNow()).toBe(1);
    });
  });

  describe('what a call leaves behind', () => {
    it('leaves no timer once a completion is answered', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => res.end(completion('ok')));
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });

      await client.complete([user]);

      expect(vi.getTimerCount()).toBe(0);
    });

    it("leaves no timer and no listener on the caller's signal once a streamed reply is read", async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => {
        res.writeHead(200, SSE);
        return writeApart(res, wholeReply);
      });
      const { signal } = new AbortController();
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });

      await drain(await client.streamCompletion([user], signal));

      expect(getEventListeners(signal, 'abort')).toEqual([]);
      // Only until the body's last chunk, which may follow [DONE], is in.
      await expect.poll(() => vi.getTimerCount()).toBe(0);
    });
  });

  describe('timeouts', () => {
    const timeout = { OPENAI_TIMEOUT_MS: '300' };

    it('times out a call that gets no answer, and drops its connection', async () => {
      client = await loadClient(timeout);
      fake.respondWith(() => ({ hang: true }));

      const started = performance.now();
      expect(await failureOf(client.complete([user]))).toMatchObject({
        code: 'upstream_timeout',
        message: 'OpenAI did not answer in time',
      });
      expect(await failureOf(client.moderate('x'))).toMatchObject({ code: 'upstream_timeout' });
      // Two 300 ms deadlines; the fake itself never answers.
      expect(performance.now() - started).toBeLessThan(3000);
      await expect.poll(() => abortedNow()).toBe(2);
    });

    it('times out a body that stops half-way', async () => {
      client = await loadClient({ ...timeout, OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => {
        res.writeHead(200, { 'content-length': '1000' });
        res.write('{"choices":');
      });

      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_timeout' });
      await expect.poll(() => wire.cut()).toBe(1);
    });

    it('times out a buffered body still trickling in at the deadline', async () => {
      client = await loadClient({ ...timeout, OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) =>
        writeApart(
          res,
          Array.from({ length: 60 }, () => ' '),
          50,
        ),
      );

      const started = performance.now();
      expect(await failureOf(client.complete([user]))).toMatchObject({ code: 'upstream_timeout' });
      // At the deadline, well before the 3 s the body takes.
      expect(performance.now() - started).toBeLessThan(2000);
    });

    it('times out a stream whose headers do not come', async () => {
      client = await loadClient(timeout);
      fake.enqueue({ hang: true });

      expect(await failureOf(client.streamCompletion([user], new AbortController().signal))).toMatchObject({
        code: 'upstream_timeout',
      });
    });

    it('times out a stream that goes silent mid-reply, after the text so far', async () => {
      client = await loadClient({ ...timeout, OPENAI_BASE_URL: wire.baseURL });
      wire.respond(async (res) => {
        res.writeHead(200, SSE);
        res.write(delta('Hello'));
      });
      const events: StreamEvent[] = [];

      const stream = await client.streamCompletion([user], new AbortController().signal);
      const error = await failureOf(
        (async () => {
          for await (const event of stream) events.push(event);
        })(),
      );

      expect(events).toEqual([{ type: 'delta', content: 'Hello' }]);
      expect(error).toMatchObject({ code: 'upstream_timeout' });
      await expect.poll(() => wire.cut()).toBe(1);
    });

    it('lets a stream run past the timeout while it keeps making progress', async () => {
      client = await loadClient(timeout);
      fake.enqueue({ content: 'one two three four five six seven eight', chunkDelayMs: 100 });

      const events = await drain(await client.streamCompletion([user], new AbortController().signal));

      expect(events.filter((event) => event.type === 'delta')).toHaveLength(8);
      expect(events.at(-1)?.type).toBe('end');
    });
  });

  describe('a streamed reply', () => {
    it('yields the text as written, then the token usage', async () => {
      client = await loadClient({});
      fake.enqueue({ content: 'one two three' });

      const events = await drain(await client.streamCompletion([user], new AbortController().signal));

      expect(events).toEqual([
        { type: 'delta', content: 'one ' },
        { type: 'delta', content: 'two ' },
        { type: 'delta', content: 'three' },
        {
          type: 'end',
          tokens: {
            prompt_tokens: expect.any(Number),
            completion_tokens: 3,
            total_tokens: expect.any(Number),
          },
          replyTokens: 3,
        },
      ]);
    });

    it('reads events split anywhere, multi-byte characters split, CRLF lines, comments and [DONE]', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      const euro = Buffer.from(delta('€😀'));
      const split = euro.indexOf(Buffer.from('😀')) + 1;
      const crlf = delta('crlf').replaceAll('\n', '\r\n');
      wire.respond((res) => {
        res.writeHead(200, SSE);
        return writeApart(res, [
          ': keep-alive\n\n',
          delta('Hel').slice(0, 25),
          delta('Hel').slice(25) + delta('lo '),
          euro.subarray(0, split),
          euro.subarray(split),
          crlf.slice(0, crlf.length - 1),
          crlf.slice(crlf.length - 1),
          'data:{"choices":[{"delta":{"content":"!"}}]}\n\n',
          finish,
          usage,
          'data: [DONE]\n\n',
          delta('after done'),
        ]);
      });

      const events = await drain(await client.streamCompletion([user], new AbortController().signal));

      expect(events).toEqual([
        { type: 'delta', content: 'Hel' },
        { type: 'delta', content: 'lo ' },
        { type: 'delta', content: '€😀' },
        { type: 'delta', content: 'crlf' },
        { type: 'delta', content: '!' },
        { type: 'end', tokens: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 }, replyTokens: 2 },
      ]);
    });

    it('finishes at [DONE] when the server leaves the response open, then drops the connection', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL, OPENAI_TIMEOUT_MS: '5000' });
      wire.respond((res) => {
        res.writeHead(200, SSE);
        res.write(wholeReply.join(''));
      });

      const started = performance.now();
      const events = await drain(await client.streamCompletion([user], new AbortController().signal));

      expect(events).toEqual(hiThenEnd);
      expect(performance.now() - started).toBeLessThan(2500);
      await expect.poll(() => wire.cut(), { timeout: 3000 }).toBe(1);
    });

    it('ends with upstream_error when OpenAI reports an error mid-stream', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => {
        res.writeHead(200, SSE);
        return writeApart(res, [
          delta('Hi'),
          frame({ error: { message: 'The server had an error', type: 'server_error' } }),
        ]);
      });

      const stream = await client.streamCompletion([user], new AbortController().signal);

      expect(await failureOf(drain(stream))).toMatchObject({
        code: 'upstream_error',
        message: 'OpenAI failed during the reply: The server had an error',
      });
    });

    it('ends with upstream_invalid_response on an event that is not JSON', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => {
        res.writeHead(200, SSE);
        return writeApart(res, ['data: {"choices":\n\n']);
      });

      const stream = await client.streamCompletion([user], new AbortController().signal);

      expect(await failureOf(drain(stream))).toMatchObject({ code: 'upstream_invalid_response' });
    });

    it('ends with upstream_incomplete when the stream ends without a finish reason', async () => {
      client = await loadClient({ OPENAI_BASE_URL: wire.baseURL });
      wire.respond((res) => {
        res.writeHead(200, SSE);
        return writeApart(res, [delta('Hi'), 'data: [DONE]\n\n']);
      });

      const stream = await client.streamCompletion([user], new AbortController().signal);

      expect(await failureOf(drain(stream))).toMatchObject({ code: 'upstream_incomplete' });
    });

    it('refuses before the first event when OpenAI does not answer 2xx', async () => {
      client = await loadClient({});
      fake.enqueue({ status: 429, body: openAiError('slow down'), headers: { 'retry-after': '3' } });

      expect(await failureOf(client.streamCompletion([user], new AbortController().signal))).toMatchObject({
        code: 'upstream_rate_limited',
        retryAfterSeconds: '3',
      });
    });
  });

  describe("the caller's signal", () => {
    it('aborts the upstream request mid-stream, and the reply throws its reason', async () => {
      client = await loadClient({});
      fake.enqueue({ content: 'one two three four five six', chunkDelayMs: 50 });
      const controller = new AbortController();
      const reason = new Error('client went away');
      const stream = await client.streamCompletion([user], controller.signal);

      const first = await stream.next();
      controller.abort(reason);

      expect(first.value).toEqual({ type: 'delta', content: 'one ' });
      expect(await failureOf(drain(stream))).toBe(reason);
      await expect.poll(() => abortedNow()).toBe(1);
    });

    it('aborts a request still waiting for its answer', async () => {
      client = await loadClient({});
      fake.enqueue({ delayMs: 1000 });
      const controller = new AbortController();
      const reason = new Error('client went away');
      const opening = client.streamCompletion([user], controller.signal);

      await expect.poll(() => fake.requests.length).toBe(1);
      controller.abort(reason);

      expect(await failureOf(opening)).toBe(reason);
      await expect.poll(() => abortedNow()).toBe(1);
    });

    it('sends nothing when it has already aborted', async () => {
      client = await loadClient({});
      const reason = new Error('gone already');

      expect(await failureOf(client.streamCompletion([user], AbortSignal.abort(reason)))).toBe(reason);
      expect(fake.requests).toEqual([]);
    });

    it.each(['return', 'throw', 'cancel'] as const)(
      'drops the upstream request at once when the caller leaves with %s() before reading anything',
      async (leave) => {
        client = await loadClient({ OPENAI_BASE_URL: wire.baseURL, OPENAI_TIMEOUT_MS: '10000' });
        wire.respond((res) => {
          res.writeHead(200, SSE);
          res.write(delta('Hello'));
        });
        const { signal } = new AbortController();
        const stream = await client.streamCompletion([user], signal);
        const reason = new Error('the caller failed');

        if (leave === 'return') expect(await stream.return()).toEqual({ done: true, value: undefined });
        else if (leave === 'throw') expect(await failureOf(stream.throw(reason))).toBe(reason);
        else stream.cancel();

        await expect.poll(() => wire.cut(), { timeout: 2000 }).toBe(1);
        expect(getEventListeners(signal, 'abort')).toEqual([]);
        expect(await stream.next()).toEqual({ done: true, value: undefined });
      },
    );

    it('stops waiting to retry when it aborts, and sends nothing more', async () => {
      client = await loadClient({ OPENAI_MAX_RETRIES: '2', OPENAI_TIMEOUT_MS: '10000' });
      fake.enqueue({ status: 503, body: openAiError('busy'), headers: { 'retry-after': '5' } });
      const controller = new AbortController();
      const reason = new Error('client went away');
      const opening = client.streamCompletion([user], controller.signal);
      await expect.poll(() => fake.requests.length).toBe(1);
      await sleep(100);

      const started = performance.now();
      controller.abort(reason);

      expect(await failureOf(opening)).toBe(reason);
      expect(performance.now() - started).toBeLessThan(2000);
      expect(getEventListeners(controller.signal, 'abort')).toEqual([]);
      await sleep(100);
      expect(fake.requests).toHaveLength(1);
    });

    it('drops the upstream request when the caller stops reading early', async () => {
      client = await loadClient({});
      fake.enqueue({ content: 'one two three four five six', chunkDelayMs: 50 });
      const stream = await client.streamCompletion([user], new AbortController().signal);

      await stream.next();
      await stream.return(undefined);

      await expect.poll(() => abortedNow()).toBe(1);
    });
  });
});
