import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { type DevServer, isListening, startDevServer } from '../support/dev-server';
import { uniqueId } from '../support/events';
import { type FakeOpenAi, openAiError, startFakeOpenAi } from '../support/fake-openai';

const JSON_TYPE = 'application/json; charset=utf-8';
const FORBIDDEN = {
  error: { code: 'forbidden', message: 'Forbidden: a valid x-api-key header is required' },
};

const keyA = `test-key-a-${randomUUID()}`;
const keyB = `test-key-b-${randomUUID()}`;

interface Call {
  readonly key?: string | null;
  readonly json?: unknown;
  readonly body?: RequestInit['body'];
  readonly headers?: Record<string, string>;
}

let fake: FakeOpenAi;
let dev: DevServer;

/** A request to the dev server, with key A unless `key` says otherwise (`null`: no header). */
function call(method: string, path: string, { key = keyA, json, body, headers = {} }: Call = {}) {
  return fetch(`${dev.url}${path}`, {
    method,
    headers: {
      ...(key === null ? {} : { 'x-api-key': key }),
      ...(json === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    body: json === undefined ? body : JSON.stringify(json),
  });
}

async function expectJson(response: Response, status: number, body: unknown): Promise<void> {
  expect({ status: response.status, type: response.headers.get('content-type') }).toEqual({
    status,
    type: JSON_TYPE,
  });
  expect(await response.json()).toEqual(body);
}

async function expectError(response: Response, status: number, code: string): Promise<void> {
  expect({ status: response.status, type: response.headers.get('content-type') }).toEqual({
    status,
    type: JSON_TYPE,
  });
  expect(await response.json()).toEqual({ error: { code, message: expect.any(String) } });
}

function upstreamMessages(index = 0): unknown {
  const request = fake.requestsTo('/chat/completions')[index];
  return (request?.body as { messages?: unknown } | undefined)?.messages;
}

/** Event frames of a Server-Sent Events body; comments (keep-alives) are left out. */
function serverSentEvents(text: string): Array<{ event: string; data: unknown }> {
  return text
    .split('\n\n')
    .filter((frame) => frame.trim() !== '' && !frame.startsWith(':'))
    .map((frame) => ({
      event: /^event: (.*)$/m.exec(frame)?.[1] ?? 'message',
      data: JSON.parse(/^data: (.*)$/m.exec(frame)?.[1] ?? 'null'),
    }));
}

const anyTokens = {
  completion_tokens: expect.any(Number),
  prompt_tokens: expect.any(Number),
  total_tokens: expect.any(Number),
};

describe('local server (npm run dev) over HTTP', () => {
  beforeAll(async () => {
    fake = await startFakeOpenAi();
    dev = await startDevServer({
      env: {
        REDIS_URL: inject('redisUrl'),
        OPENAI_API_KEY: 'sk-test',
        OPENAI_BASE_URL: fake.baseURL,
        CHAT_PROXY_API_KEYS: `${keyA},${keyB}`,
      },
    });
  });

  afterAll(async () => {
    const exit = await dev?.stop();
    await fake?.close();
    expect(exit).toEqual({ code: 0, signal: null });
  });

  beforeEach(() => {
    fake.reset();
  });

  describe('GET /', () => {
    it('answers 200 text/html "Hello, World!" without an API key', async () => {
      const response = await call('GET', '/', { key: null });

      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/html/);
      expect(await response.text()).toBe('Hello, World!');
    });
  });

  describe('API keys', () => {
    it('returns 403 when the x-api-key header is missing', async () => {
      const response = await call('POST', '/mod', { key: null, json: { content: 'hi' } });

      await expectJson(response, 403, FORBIDDEN);
      expect(fake.requests).toHaveLength(0);
    });

    it('returns 403 when the x-api-key header is not a known key', async () => {
      const response = await call('GET', '/system', { key: `unknown-${randomUUID()}` });

      await expectJson(response, 403, FORBIDDEN);
    });

    it('stores chats under the key id, never under the API key itself', async () => {
      const chatId = uniqueId('tenant');
      const keyId = `local-${createHash('sha256').update(keyA).digest('hex').slice(0, 16)}`;
      await call('POST', `/${chatId}/system`, { json: { content: 'Prompt' } });
      const redis = new Redis(inject('redisUrl'));

      try {
        const stored = await redis.keys(`*${chatId}*`);

        expect(stored).not.toHaveLength(0);
        expect(stored.every((key) => key.includes(keyId) && !key.includes(keyA))).toBe(true);
      } finally {
        redis.disconnect();
      }
    });

    it('keeps the global system prompts of two keys apart', async () => {
      await call('POST', '/system', { key: keyA, json: { content: 'Prompt of A' } });

      const beforeB = await call('GET', '/system', { key: keyB });
      await call('POST', '/system', { key: keyB, json: { content: 'Prompt of B' } });
      const afterA = await call('GET', '/system', { key: keyA });
      const afterB = await call('GET', '/system', { key: keyB });

      await expectJson(beforeB, 200, { content: null });
      await expectJson(afterA, 200, { content: 'Prompt of A' });
      await expectJson(afterB, 200, { content: 'Prompt of B' });
    });

    it('keeps chats with the same chat id apart under two keys', async () => {
      const chatId = uniqueId('shared');
      await call('POST', `/${chatId}/chat`, { key: keyA, json: { content: 'From A' } });

      const ofB = await call('GET', `/${chatId}/chat`, { key: keyB });
      const ofA = await call('GET', `/${chatId}/chat`, { key: keyA });

      await expectJson(ofB, 200, []);
      expect(((await ofA.json()) as unknown[])[0]).toMatchObject({ role: 'user', content: 'From A' });
    });
  });

  describe('/system', () => {
    it('returns 200 {} on POST and the prompt on GET', async () => {
      const content = `You are a python engineer ${randomUUID()}`;

      const posted = await call('POST', '/system', { json: { content } });
      const got = await call('GET', '/system');

      await expectJson(posted, 200, {});
      await expectJson(got, 200, { content });
    });
  });

  describe('POST /mod', () => {
    it("returns OpenAI's moderation result for the content", async () => {
      const response = await call('POST', '/mod', { json: { content: 'Is this fine?' } });

      await expectJson(response, 200, {
        id: expect.stringMatching(/^modr-/),
        model: 'omni-moderation-latest',
        results: [expect.objectContaining({ flagged: false })],
      });
      expect(fake.requestsTo('/moderations')[0]?.body).toMatchObject({ input: 'Is this fine?' });
    });
  });

  describe('/<chat_id>/system', () => {
    it('returns null content for a chat without a system prompt', async () => {
      const response = await call('GET', `/${uniqueId('chat')}/system`);

      await expectJson(response, 200, { content: null });
    });

    it('returns 200 {} on POST and the prompt on GET', async () => {
      const chatId = uniqueId('chat');

      const posted = await call('POST', `/${chatId}/system`, { json: { content: 'Answer in French' } });
      const got = await call('GET', `/${chatId}/system`);

      await expectJson(posted, 200, {});
      await expectJson(got, 200, { content: 'Answer in French' });
    });
  });

  describe('POST /<chat_id>/chat', () => {
    it('answers with the assistant reply and its token usage', async () => {
      const chatId = uniqueId('chat');

      const response = await call('POST', `/${chatId}/chat`, { json: { content: 'Hello there' } });

      await expectJson(response, 200, {
        content: expect.stringContaining('You said: "Hello there"'),
        role: 'assistant',
        tokens: anyTokens,
      });
    });

    it('sends OpenAI the global prompt, the chat prompt, the history and the new message, in that order', async () => {
      const chatId = uniqueId('chat');
      await call('POST', '/system', { json: { content: 'Global prompt' } });
      await call('POST', `/${chatId}/system`, { json: { content: 'Chat prompt' } });
      const first = (await (await call('POST', `/${chatId}/chat`, { json: { content: 'One' } })).json()) as {
        content: string;
      };

      await call('POST', `/${chatId}/chat`, { json: { content: 'Two' } });

      expect(upstreamMessages(1)).toEqual([
        { role: 'system', content: 'Global prompt' },
        { role: 'system', content: 'Chat prompt' },
        { role: 'user', content: 'One' },
        { role: 'assistant', content: first.content },
        { role: 'user', content: 'Two' },
      ]);
    });

    it('streams the reply as Server-Sent Events when the client accepts text/event-stream', async () => {
      const chatId = uniqueId('chat');

      const response = await call('POST', `/${chatId}/chat`, {
        json: { content: 'Stream this' },
        headers: { accept: 'text/event-stream' },
      });

      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const events = serverSentEvents(await response.text());
      const streamed = events
        .filter(({ event }) => event === 'delta')
        .map(({ data }) => (data as { content: string }).content)
        .join('');
      expect(streamed).toContain('You said: "Stream this"');
      expect(events.at(-1)).toEqual({
        event: 'done',
        data: { content: streamed, role: 'assistant', tokens: anyTokens },
      });
      await expectJson(await call('GET', `/${chatId}/chat`), 200, [
        { id: 0, role: 'user', content: 'Stream this', created_at: expect.any(String) },
        { id: 1, role: 'assistant', content: streamed, created_at: expect.any(String) },
      ]);
    });

    it('returns 502 and stores nothing when OpenAI fails', async () => {
      const chatId = uniqueId('chat');
      fake.enqueue({ status: 500, body: openAiError('boom') });

      const response = await call('POST', `/${chatId}/chat`, { json: { content: 'Lost' } });
      const history = await call('GET', `/${chatId}/chat`);

      await expectError(response, 502, 'upstream_error');
      await expectJson(history, 200, []);
    });

    it('returns 400 when the body is not valid JSON', async () => {
      const response = await call('POST', `/${uniqueId('chat')}/chat`, {
        body: '{"content": ',
        headers: { 'content-type': 'application/json' },
      });

      await expectError(response, 400, 'invalid_body');
      expect(fake.requests).toHaveLength(0);
    });

    it('returns 400 when the body is not UTF-8 text', async () => {
      const response = await call('POST', `/${uniqueId('chat')}/chat`, {
        body: new Uint8Array([0xff, 0xfe, 0x00, 0x7b]),
      });

      await expectError(response, 400, 'invalid_body');
    });

    it('returns 400 when content is missing', async () => {
      const response = await call('POST', `/${uniqueId('chat')}/chat`, { json: { text: 'wrong field' } });

      await expectError(response, 400, 'invalid_body');
    });

    it('returns 413 when the body is over the 10 MB limit, without calling OpenAI', async () => {
      const response = await call('POST', `/${uniqueId('chat')}/chat`, {
        body: JSON.stringify({ content: 'x'.repeat(11 * 1024 * 1024) }),
        headers: { 'content-type': 'application/json' },
      });

      await expectError(response, 413, 'payload_too_large');
      expect(fake.requests).toHaveLength(0);
    });
  });

  describe('GET /<chat_id>/chat', () => {
    it('returns the messages oldest first', async () => {
      const chatId = uniqueId('chat');
      const first = (await (await call('POST', `/${chatId}/chat`, { json: { content: 'One' } })).json()) as {
        content: string;
      };
      const second = (await (await call('POST', `/${chatId}/chat`, { json: { content: 'Two' } })).json()) as {
        content: string;
      };

      const response = await call('GET', `/${chatId}/chat`);

      await expectJson(response, 200, [
        { id: 0, role: 'user', content: 'One', created_at: expect.any(String) },
        { id: 1, role: 'assistant', content: first.content, created_at: expect.any(String) },
        { id: 2, role: 'user', content: 'Two', created_at: expect.any(String) },
        { id: 3, role: 'assistant', content: second.content, created_at: expect.any(String) },
      ]);
    });

    it('returns an empty array for a chat never written to', async () => {
      const response = await call('GET', `/${uniqueId('chat')}/chat`);

      await expectJson(response, 200, []);
    });
  });

  describe('POST /<chat_id>/img', () => {
    it('sends the prompt as a text part and the URL as an image_url part, after the history', async () => {
      const chatId = uniqueId('chat');
      const url = 'https://example.com/cat.png';
      await call('POST', `/${chatId}/chat`, { json: { content: 'Before' } });
      fake.reset();

      const response = await call('POST', `/${chatId}/img`, {
        json: { content: "What's on this image?", url },
      });

      await expectJson(response, 200, {
        content: expect.stringMatching(/^I see an image\./),
        role: 'assistant',
        tokens: anyTokens,
      });
      const messages = upstreamMessages() as unknown[];
      expect(messages.slice(-3)).toEqual([
        { role: 'user', content: 'Before' },
        { role: 'assistant', content: expect.any(String) },
        {
          role: 'user',
          content: [
            { type: 'text', text: "What's on this image?" },
            { type: 'image_url', image_url: { url } },
          ],
        },
      ]);
    });

    it('returns 400 when the url is not http(s)', async () => {
      const response = await call('POST', `/${uniqueId('chat')}/img`, {
        json: { content: 'What is it?', url: 'file:///etc/passwd' },
      });

      await expectError(response, 400, 'invalid_body');
      expect(fake.requests).toHaveLength(0);
    });
  });

  describe('POST /<chat_id>/clear', () => {
    it('deletes the messages and keeps the chat system prompt', async () => {
      const chatId = uniqueId('chat');
      await call('POST', `/${chatId}/system`, { json: { content: 'Be brief' } });
      await call('POST', `/${chatId}/chat`, { json: { content: 'Hello' } });

      const cleared = await call('POST', `/${chatId}/clear`);

      await expectJson(cleared, 200, {});
      await expectJson(await call('GET', `/${chatId}/chat`), 200, []);
      await expectJson(await call('GET', `/${chatId}/system`), 200, { content: 'Be brief' });
    });
  });

  describe('routing', () => {
    it('returns 404 for a path no route serves', async () => {
      const response = await call('GET', '/a/b/c');

      await expectError(response, 404, 'not_found');
    });

    it('returns 405 with an Allow header for a method the path does not serve', async () => {
      const response = await call('DELETE', '/system');

      expect(response.headers.get('allow')).toBe('GET, POST');
      await expectError(response, 405, 'method_not_allowed');
    });

    it('returns 400 when the chat id has characters outside the allowed set', async () => {
      const response = await call('GET', '/bad%20id/chat');

      await expectError(response, 400, 'invalid_chat_id');
    });

    it('returns 400 when the chat id is longer than the limit', async () => {
      const response = await call('GET', `/${'a'.repeat(200)}/chat`);

      await expectError(response, 400, 'invalid_chat_id');
    });

    it('returns 400 when the chat id is a route word', async () => {
      const response = await call('GET', '/system/system');

      await expectError(response, 400, 'invalid_chat_id');
    });
  });

  describe('the README curl examples', () => {
    it('answers the POST /<chat_id>/chat example run with curl', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'chat-proxy-curl-'));
      writeFileSync(join(dir, 'message.json'), JSON.stringify({ content: 'Hello from curl' }));
      const chatId = uniqueId('curl');
      const command = `curl -X POST -H "Content-Type: application/json" -H "x-api-key: ${keyA}" --data @message.json http://localhost:${dev.port}/${chatId}/chat`;

      try {
        const { stdout } = await promisify(execFile)('sh', ['-c', command], { cwd: dir });

        expect(JSON.parse(stdout)).toEqual({
          content: expect.stringContaining('You said: "Hello from curl"'),
          role: 'assistant',
          tokens: anyTokens,
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});

describe('npm run dev without any configuration', () => {
  let dataDir: string;
  let running: DevServer | undefined;

  beforeAll(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'chat-proxy-dev-'));
  });

  afterAll(async () => {
    await running?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function start(): Promise<{ key: string; redisPort: number }> {
    running = await startDevServer({ how: 'npm', env: { CHAT_PROXY_DATA_DIR: dataDir } });
    const output = running.output();
    const key = /x-api-key: (cp_[0-9a-f]{32})/.exec(output)?.[1];
    const redisPort = Number(/redis-server on 127\.0\.0\.1:(\d+)/.exec(output)?.[1]);
    expect(output).toContain('OFFLINE MODE');
    expect(key).toBeDefined();
    return { key: key ?? '', redisPort };
  }

  async function stop(redisPort: number): Promise<void> {
    await running?.stop();
    running = undefined;
    expect(await isListening(redisPort)).toBe(false);
  }

  it('starts offline with its own Redis and a saved key, and keeps chats across a restart', async () => {
    const chatId = uniqueId('offline');
    const first = await start();
    const reply = await fetch(`${running?.url}/${chatId}/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': first.key },
      body: JSON.stringify({ content: 'Remember me' }),
    });
    expect(await reply.json()).toEqual({
      content: 'You said: "Remember me" (offline stand-in model, turn 1)',
      role: 'assistant',
      tokens: anyTokens,
    });
    await stop(first.redisPort);

    const second = await start();
    const history = await fetch(`${running?.url}/${chatId}/chat`, { headers: { 'x-api-key': second.key } });

    expect(second.key).toBe(first.key);
    expect(readFileSync(join(dataDir, 'api-key'), 'utf8').trim()).toBe(first.key);
    expect(await history.json()).toMatchObject([
      { id: 0, role: 'user', content: 'Remember me' },
      { id: 1, role: 'assistant', content: 'You said: "Remember me" (offline stand-in model, turn 1)' },
    ]);
    await stop(second.redisPort);
  }, 120_000);
});
