import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalServer } from '../../local/server';

async function listen(corsOrigins: string[]) {
  const server = createLocalServer({ apiKeys: new Map(), corsOrigins, quiet: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

const withCors = await listen(['https://app.example']);
const withoutCors = await listen([]);
afterAll(() => {
  withCors.server.close();
  withoutCors.server.close();
});

const preflight = (url: string, path: string) =>
  fetch(`${url}${path}`, {
    method: 'OPTIONS',
    headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST' },
  });

describe('CORS preflights on the local server', () => {
  it('answer 204 with the allowed origin, methods and headers, without an API key', async () => {
    const response = await preflight(withCors.url, '/my-chat/chat');

    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(response.headers.get('access-control-allow-methods')).toBe('POST, GET, OPTIONS');
    expect(response.headers.get('access-control-allow-headers')).toContain('x-api-key');
  });

  it('leave out the origin header for an origin not allowed', async () => {
    const response = await fetch(`${withCors.url}/system`, {
      method: 'OPTIONS',
      headers: { Origin: 'https://evil.example' },
    });

    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('are a 405 when CORS is off', async () => {
    expect((await preflight(withoutCors.url, '/system')).status).toBe(405);
  });
});
