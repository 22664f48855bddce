import { afterAll, describe, expect, it, vi } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { loadHandler } from '../support/handlers';

const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.CORS_ALLOWED_ORIGINS = 'https://app.example, http://localhost:5173';

const getSystem = await loadHandler('get-system');
const postChat = await loadHandler('post-chat');
afterAll(() => fake.close());

const fromOrigin = (origin: string, more: Parameters<typeof apiEvent>[0] = {}) =>
  apiEvent({
    resource: '/system',
    path: '/system',
    apiKeyId: uniqueId('t'),
    ...more,
    headers: { Origin: origin },
  });

describe('CORS headers from the functions', () => {
  it('echo an allowed origin on a buffered answer', async () => {
    const result = await getSystem(fromOrigin('https://app.example'));

    expect(result.headers).toMatchObject({
      'Access-Control-Allow-Origin': 'https://app.example',
      Vary: 'Origin',
    });
  });

  it('are on error answers too', async () => {
    const result = await getSystem(fromOrigin('http://localhost:5173', { apiKeyId: null }));

    expect(result.statusCode).toBe(403);
    expect(result.headers['Access-Control-Allow-Origin']).toBe('http://localhost:5173');
  });

  it('are on streamed answers', async () => {
    const result = await postChat(
      fromOrigin('https://app.example', {
        method: 'POST',
        resource: '/{chat_id}/chat',
        pathParameters: { chat_id: uniqueId('c') },
        body: JSON.stringify({ content: 'hi', stream: true }),
      }),
    );

    expect(result.headers['Content-Type']).toMatch(/^text\/event-stream/);
    expect(result.headers['Access-Control-Allow-Origin']).toBe('https://app.example');
  });

  it('are left out for an origin not allowed', async () => {
    const result = await getSystem(fromOrigin('https://evil.example'));

    expect(result.headers['Access-Control-Allow-Origin']).toBeUndefined();
    expect(result.headers.Vary).toBe('Origin');
  });

  it('allow any origin with *', async () => {
    vi.resetModules();
    process.env.CORS_ALLOWED_ORIGINS = '*';
    const open = await loadHandler('get-system');

    expect((await open(fromOrigin('https://anywhere.example'))).headers['Access-Control-Allow-Origin']).toBe(
      '*',
    );
  });

  it('are absent when CORS is off', async () => {
    vi.resetModules();
    delete process.env.CORS_ALLOWED_ORIGINS;
    const closed = await loadHandler('get-system');

    expect(
      (await closed(fromOrigin('https://app.example'))).headers['Access-Control-Allow-Origin'],
    ).toBeUndefined();
  });
});
