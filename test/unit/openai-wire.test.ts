import { afterEach, describe, expect, it, vi } from 'vitest';
import { errorMessageOf, retryDelayMs, SseDecoder, shouldRetry } from '../../functions/shared/openai-wire';

/** Feeds `pieces` to a fresh decoder, one `push` each, and answers every event's data. */
function decode(...pieces: string[]): string[] {
  const decoder = new SseDecoder();
  const events: string[] = [];
  for (const piece of pieces) decoder.push(piece, events);
  return events;
}

describe('SseDecoder', () => {
  const stream =
    ': keep-alive\r\n\r\n' +
    'data: {"a":1}\r\n\r\n' +
    'event: message\nid: 7\ndata:{"b":2}\n\n' +
    'data: first\ndata: second\n\n' +
    'retry: 10\r\rdata: {"c":"€ 😀"}\r\r' +
    'data: [DONE]\n\n';
  const expected = ['{"a":1}', '{"b":2}', 'first\nsecond', '{"c":"€ 😀"}', '[DONE]'];

  it('answers the data of each event, whatever the line endings, skipping comments and other fields', () => {
    expect(decode(stream)).toEqual(expected);
  });

  it('answers the same events however the text is split, \\r\\n pairs included', () => {
    for (let at = 0; at <= stream.length; at += 1) {
      expect(decode(stream.slice(0, at), stream.slice(at)), `split at ${at}`).toEqual(expected);
    }
  });

  it('answers the same events when the text arrives one character at a time', () => {
    expect(decode(...stream)).toEqual(expected);
  });

  it('keeps an event whose blank line has not arrived yet', () => {
    const decoder = new SseDecoder();
    const events: string[] = [];

    decoder.push('data: {"a":1}\n', events);
    expect(events).toEqual([]);
    decoder.push('\n', events);
    expect(events).toEqual(['{"a":1}']);
  });

  it('treats a field named otherwise than data, such as data2, as not data', () => {
    expect(decode('data2: x\ndata\n\n')).toEqual(['']);
  });
});

describe('shouldRetry', () => {
  it.each([408, 409, 429, 500, 502, 503])('retries a %i', (status) => {
    expect(shouldRetry(status, {})).toBe(true);
  });

  it.each([400, 401, 403, 404, 422])('does not retry a %i', (status) => {
    expect(shouldRetry(status, {})).toBe(false);
  });

  it('obeys x-should-retry either way', () => {
    expect(shouldRetry(400, { 'x-should-retry': 'true' })).toBe(true);
    expect(shouldRetry(503, { 'x-should-retry': 'false' })).toBe(false);
  });
});

describe('retryDelayMs', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('waits what retry-after-ms asks, before retry-after', () => {
    expect(retryDelayMs(0, { 'retry-after-ms': '250', 'retry-after': '9' })).toBe(250);
  });

  it('waits what retry-after asks, in seconds', () => {
    expect(retryDelayMs(0, { 'retry-after': '1.5' })).toBe(1500);
  });

  it('waits until the HTTP date retry-after gives', () => {
    vi.useFakeTimers({ now: Date.parse('2026-01-01T00:00:00Z') });

    expect(retryDelayMs(0, { 'retry-after': 'Thu, 01 Jan 2026 00:00:03 GMT' })).toBe(3000);
  });

  it('backs off 0.5 s doubled per retry, at most 8 s, less up to a quarter of jitter', () => {
    for (const [retry, full] of [
      [0, 500],
      [1, 1000],
      [3, 4000],
      [4, 8000],
      [5, 8000],
    ] as const) {
      const delay = retryDelayMs(retry);
      expect(delay).toBeGreaterThanOrEqual(full * 0.75);
      expect(delay).toBeLessThanOrEqual(full);
    }
  });

  it('backs off, as the SDK does, instead of waiting a minute or more, no time, a negative or an unreadable one', () => {
    for (const headers of [
      { 'retry-after': '60' },
      { 'retry-after': '61' },
      { 'retry-after': '0' },
      { 'retry-after-ms': '0' },
      { 'retry-after-ms': '-5' },
      { 'retry-after-ms': '-5', 'retry-after': '2' },
      { 'retry-after': 'soon' },
    ]) {
      const delay = retryDelayMs(0, headers);
      expect(delay, JSON.stringify(headers)).toBeLessThanOrEqual(500);
      expect(delay, JSON.stringify(headers)).toBeGreaterThanOrEqual(375);
    }
  });

  it('waits what is asked when it is just under a minute', () => {
    expect(retryDelayMs(0, { 'retry-after': '59.5' })).toBe(59_500);
  });

  it('reads retry-after when retry-after-ms asks for no wait, as the SDK does', () => {
    expect(retryDelayMs(0, { 'retry-after-ms': '0', 'retry-after': '2' })).toBe(2000);
  });
});

describe('errorMessageOf', () => {
  it("answers OpenAI's error.message", () => {
    expect(errorMessageOf('{"error":{"message":"bad model","type":"invalid_request_error"}}')).toBe(
      'bad model',
    );
  });

  it.each(['', 'not json', 'null', '{"error":{"message":""}}', '{"error":"x"}', '{"message":"x"}'])(
    'answers undefined for %j',
    (body) => {
      expect(errorMessageOf(body)).toBeUndefined();
    },
  );
});
