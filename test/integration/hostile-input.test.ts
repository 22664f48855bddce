import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { routes } from '../../functions/routes';
import { apiEvent } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { type Invoke, loadHandler } from '../support/handlers';

// Its own key prefix, so the keyspace check below sees only what this file wrote.
const PREFIX = `hostile-${process.pid}`;
const TENANTS = ['tenant-one', 'tenant_two'];
const fake = await startFakeOpenAi();
process.env.OPENAI_BASE_URL = fake.baseURL;
process.env.REDIS_KEY_PREFIX = PREFIX;
process.env.OPENAI_TIMEOUT_MS = '2000';

const handlers = new Map<string, Invoke>();
for (const route of routes) handlers.set(route.id, await loadHandler(route.entry));
const redis = new Redis(process.env.REDIS_URL as string);

afterAll(async () => {
  const written = await redis.keys(`${PREFIX}:*`);
  if (written.length > 0) await redis.del(...written);
  redis.disconnect();
  await fake.close();
});

// Well-formed requests are weighted up, so every run also reaches the happy paths (and writes):
// the keyspace check below must have something to check.
const jsonValue = fc.oneof(
  {
    arbitrary: fc.record({ content: fc.string({ minLength: 1 }).filter((text) => text.trim() !== '') }),
    weight: 4,
  },
  fc.jsonValue(),
  fc.record({ content: fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.jsonValue()) }),
  fc.record({
    content: fc.string({ minLength: 1 }),
    url: fc.oneof(
      fc.webUrl(),
      fc.string(),
      fc.constantFrom('javascript:alert(1)', 'file:///etc/passwd', 'http://'),
    ),
    stream: fc.oneof(fc.boolean(), fc.jsonValue()),
    wait_ms: fc.oneof(fc.integer({ min: -10, max: 40_000 }), fc.jsonValue()),
  }),
);

/** A body as a client might send it: JSON, broken text, or raw bytes (base64 on the event). */
const body = fc.oneof(
  {
    arbitrary: jsonValue.map((value) => ({ body: JSON.stringify(value) ?? 'null', isBase64Encoded: false })),
    weight: 4,
  },
  fc.string().map((text) => ({ body: text, isBase64Encoded: false })),
  fc
    .uint8Array({ maxLength: 300 })
    .map((bytes) => ({ body: Buffer.from(bytes).toString('base64'), isBase64Encoded: true })),
  fc.constant({ body: null, isBase64Encoded: false }),
);

const chatId = fc.oneof(
  { arbitrary: fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/), weight: 3 },
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.constantFrom('', 'system', 'mod', '..', '{x}', 'a:b', '*', 'x'.repeat(129), '%7Bx%7D', 'c}:{t:other'),
);

const headers = fc.record(
  {
    accept: fc.oneof(fc.constant('text/event-stream'), fc.string()),
    'content-type': fc.oneof(fc.constant('application/json'), fc.string()),
    'Idempotency-Key': fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 10 })),
  },
  { requiredKeys: [] },
);

const request = fc.record({
  route: fc.constantFrom(...routes),
  chatId,
  tenant: fc.oneof(
    { arbitrary: fc.constantFrom(...TENANTS), weight: 3 },
    fc.constantFrom(null, '', 'bad tenant', '{t}', 'ü'),
  ),
  body,
  headers,
});

describe('hostile input on every route', () => {
  it('never answers 5xx, always answers errors as JSON, and writes only inside its tenant', async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(request, async ({ route, chatId, tenant, body, headers }) => {
        const invoke = handlers.get(route.id) as Invoke;
        const result = await invoke(
          apiEvent({
            method: route.method,
            resource: route.path,
            path: route.path.replace('{chat_id}', encodeURIComponent(chatId)),
            pathParameters: route.path.includes('{chat_id}') ? { chat_id: chatId } : null,
            apiKeyId: tenant,
            headers: headers as Record<string, string>,
            ...body,
          }),
        );

        statuses.set(result.statusCode, (statuses.get(result.statusCode) ?? 0) + 1);
        expect(result.statusCode).toBeLessThan(500);
        if (result.headers['Content-Type']?.startsWith('text/event-stream')) {
          for (const event of result.events.filter((e) => e.event === 'error')) {
            expect((event.data as { error: { code: string } }).error.code).not.toBe('internal_error');
          }
          return;
        }
        if (result.statusCode >= 400) {
          expect(JSON.parse(result.body)).toEqual({
            error: { code: expect.any(String), message: expect.any(String) },
          });
        }
      }),
      { numRuns: 400 },
    );

    // The generators must reach the handlers' happy paths too, or the keyspace check proves little.
    expect(statuses.get(200)).toBeGreaterThan(20);
    const written = await redis.keys(`${PREFIX}:*`);
    expect(written.length).toBeGreaterThan(0);
    const allowed = TENANTS.flatMap((tenant) => [`${PREFIX}:{t:${tenant}}:`, `${PREFIX}:{c:${tenant}:`]);
    for (const key of written) {
      expect(
        allowed.some((start) => key.startsWith(start)),
        key,
      ).toBe(true);
      // Idempotency records end in a SHA-256; a cluster's usage markers in a turn's lease token.
      expect(key, key).toMatch(/^[^{}]*\{[ct]:[A-Za-z0-9_:-]+\}:[a-z]+(:[0-9a-f]{64}|:[0-9a-f-]{36})?$/);
    }
  }, 120_000);
});
