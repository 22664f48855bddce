import { apiEvent } from '../test/support/events';
import type { Invoke } from '../test/support/handlers';
import { USER_MESSAGE } from './fixture';
import type { Batch, RedisCounter } from './redis-counter';

export interface RoundTripResult {
  readonly operation: string;
  /** Round trips per invocation, lowest and highest over the counted invocations. */
  readonly roundTrips: { min: number; max: number };
  readonly commands: { min: number; max: number };
  /** The batches of the last invocation, one bracket per round trip: "[GET, EVALSHA] [EVALSHA, …]". */
  readonly batches: string;
  readonly invocations: number;
  /** The target, when the issue sets one. */
  readonly target?: number;
}

export interface RoundTripHandlers {
  readonly postChat: Invoke;
  readonly getChat: Invoke;
  readonly getSystem: Invoke;
}

export function describeBatches(batches: Batch[]): string {
  return batches
    .map((batch) => {
      const counts = new Map<string, number>();
      for (const name of batch.commands) counts.set(name, (counts.get(name) ?? 0) + 1);
      return `[${[...counts].map(([name, count]) => (count > 1 ? `${name}×${count}` : name)).join(', ')}]`;
    })
    .join(' ');
}

async function count(
  counter: RedisCounter,
  operation: string,
  invoke: () => Promise<void>,
  target?: number,
  warmup = 3,
  invocations = 10,
): Promise<RoundTripResult> {
  // The first call of each script may add a NOSCRIPT round trip (EVALSHA, then EVAL).
  for (let i = 0; i < warmup; i += 1) await invoke();
  const trips: number[] = [];
  const commands: number[] = [];
  let last: Batch[] = [];
  for (let i = 0; i < invocations; i += 1) {
    counter.start();
    await invoke();
    // Let anything the handler left running (it should not) still be counted.
    await new Promise((resolve) => setImmediate(resolve));
    last = counter.stop();
    trips.push(last.length);
    commands.push(last.reduce((sum, batch) => sum + batch.commands.length, 0));
  }
  if (Math.max(...commands) === 0) {
    throw new Error(
      `${operation}: no Redis command was counted: the instrumented client is not the one the handlers use`,
    );
  }
  return {
    operation,
    roundTrips: { min: Math.min(...trips), max: Math.max(...trips) },
    commands: { min: Math.min(...commands), max: Math.max(...commands) },
    batches: describeBatches(last),
    invocations,
    ...(target === undefined ? {} : { target }),
  };
}

function expectStatus(what: string, status: number, body: string): void {
  if (status !== 200) throw new Error(`${what}: status ${status}: ${body.slice(0, 300)}`);
}

/** Counts the round trips of each operation the issue names, on a chat that fills the budget. */
export async function countRoundTrips(
  counter: RedisCounter,
  handlers: RoundTripHandlers,
  tenant: string,
  chatId: string,
): Promise<RoundTripResult[]> {
  const turn = (stream: boolean) => async () => {
    const result = await handlers.postChat(
      apiEvent({
        method: 'POST',
        resource: '/{chat_id}/chat',
        chatId,
        apiKeyId: tenant,
        json: stream ? { content: USER_MESSAGE, stream: true } : { content: USER_MESSAGE },
      }),
    );
    expectStatus(stream ? 'streamed turn' : 'buffered turn', result.statusCode, result.body);
    if (stream && !result.events.some((event) => event.event === 'done')) {
      throw new Error(`streamed turn: no done event in ${result.body.slice(0, 300)}`);
    }
  };
  const history = async () => {
    const result = await handlers.getChat(
      apiEvent({
        resource: '/{chat_id}/chat',
        chatId,
        apiKeyId: tenant,
        queryStringParameters: { limit: '50' },
      }),
    );
    expectStatus('history page', result.statusCode, result.body);
    if ((JSON.parse(result.body) as unknown[]).length !== 50)
      throw new Error('history page: not 50 messages');
  };
  const prompt = async () => {
    const result = await handlers.getSystem(
      apiEvent({ resource: '/system', path: '/system', apiKeyId: tenant }),
    );
    expectStatus('system prompt read', result.statusCode, result.body);
  };
  return [
    await count(counter, 'buffered turn (POST /{chat_id}/chat)', turn(false), 2),
    await count(counter, 'streamed turn (POST /{chat_id}/chat, "stream": true)', turn(true)),
    await count(counter, 'history page (GET /{chat_id}/chat?limit=50)', history, 1),
    await count(counter, 'system prompt read (GET /system)', prompt, 1),
  ];
}
