import { describe, expect, it } from 'vitest';
import { apiEvent, uniqueId } from '../support/events';
import { loadHandler } from '../support/handlers';

// `sam local start-api` sets AWS_SAM_LOCAL, checks no API key and passes no key id.
process.env.AWS_SAM_LOCAL = 'true';
const getSystem = await loadHandler('get-system');
const postSystem = await loadHandler('post-system');

const event = (key: string | undefined, json?: unknown) =>
  apiEvent({
    method: json === undefined ? 'GET' : 'POST',
    resource: '/system',
    path: '/system',
    apiKeyId: null,
    headers: key === undefined ? {} : { 'x-api-key': key },
    ...(json === undefined ? {} : { body: JSON.stringify(json) }),
  });

describe('under sam local', () => {
  it('derives the tenant from the x-api-key header, one tenant per key', async () => {
    const [keyA, keyB] = [uniqueId('key'), uniqueId('key')];

    expect((await postSystem(event(keyA, { content: 'prompt of A' }))).statusCode).toBe(200);

    expect(JSON.parse((await getSystem(event(keyA))).body)).toEqual({ content: 'prompt of A' });
    expect(JSON.parse((await getSystem(event(keyB))).body)).toEqual({ content: null });
  });

  it('returns 403 without an x-api-key header', async () => {
    expect((await getSystem(event(undefined))).statusCode).toBe(403);
  });
});
