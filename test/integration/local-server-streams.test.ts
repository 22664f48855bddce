import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { routes } from '../../functions/routes';
import type { ResponseStream } from '../../functions/shared/lambda-stream';
import { awsLambdaStandIn, installAwsLambda } from '../../local/awslambda';
import { createLocalServer } from '../../local/server';

// However a streaming handler writes its answer (in one write or several, within a tick or across
// ticks, ending it or leaving the end to the server), the local server must deliver all of it.
// CI runs this on Node 20 and on Node 24, whose corked responses once lost a body's tail.
installAwsLambda();
const tick = () => new Promise((resolve) => setImmediate(resolve));
const open = (stream: ResponseStream, contentType: string) =>
  awsLambdaStandIn.HttpResponseStream.from(stream, {
    statusCode: 200,
    headers: { 'content-type': contentType },
  });

const TICK = Symbol('the next tick');
const END = Symbol('end');
const THROW = Symbol('a failure');
/** What a handler does: its answer's content type (none: no prelude), then writes, ticks, the end. */
type Scenario = readonly [
  contentType: string | undefined,
  ...steps: (string | typeof TICK | typeof END | typeof THROW)[],
];

const scenarios: Record<string, Scenario> = {
  'JSON, one write and the end in one tick': ['application/json', '{"a":1}', END],
  'JSON, two writes and the end in one tick': ['application/json', '{"a":', '1}', END],
  'JSON, a write, then in the next tick a write and the end': ['application/json', '{"a":', TICK, '1}', END],
  'JSON, writes across ticks, the end left to the server': ['application/json', '{"a":', TICK, '1}'],
  'no prelude, two writes': [undefined, 'A', 'B', END],
  'an event stream, events and the end in one tick': [
    'text/event-stream',
    'event: delta\n\n',
    'event: done\n\n',
    END,
  ],
  'an event stream, the last event and the end a tick later': [
    'text/event-stream',
    'event: delta\n\n',
    TICK,
    'event: done\n\n',
    END,
  ],
};

const failing: Record<string, Scenario> = {
  'an event, then a failure in the same tick': ['text/event-stream', 'event: delta\n\n', THROW],
  'an event, then another and a failure a tick later': [
    'text/event-stream',
    'event: delta\n\n',
    TICK,
    'event: delta\n\n',
    THROW,
  ],
};

async function play([contentType, ...steps]: Scenario, stream: ResponseStream): Promise<void> {
  const body = contentType === undefined ? stream : open(stream, contentType);
  for (const step of steps) {
    if (step === TICK) await tick();
    else if (step === END) body.end();
    else if (step === THROW) throw new Error('the handler failed');
    else body.write(step);
  }
}

const bodyOf = ([, ...steps]: Scenario) => steps.filter((step) => typeof step === 'string').join('');

let current = '';
const handler = awsLambdaStandIn.streamifyResponse(async (_event, stream) =>
  play(scenarios[current] ?? failing[current] ?? [undefined], stream),
);
const server = createLocalServer({
  apiKeys: new Map([['key', 'tenant']]),
  quiet: true,
  corsOrigins: [],
  loadHandler: async () => handler,
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address() as AddressInfo;
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

// Any route will do: the scripted handler answers them all.
const route = routes.find((each) => each.method === 'GET' && each.path === '/usage') ?? routes[0];

/** What arrives before the connection ends, however it ends, and whether the body was whole. */
function getWhatArrives(): Promise<{ text: string; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { port, host: '127.0.0.1', path: route?.path, method: 'GET', headers: { 'x-api-key': 'key' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          text += chunk;
        });
        res.on('error', () => undefined);
        res.on('close', () => resolve({ text, complete: res.complete }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('the local server, a streaming handler that fails after writing', () => {
  it.each(Object.keys(failing))('%s: what it wrote arrives before the connection ends', async (name) => {
    const logged = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    current = name;
    try {
      const arrived = await getWhatArrives();
      expect(arrived.text).toBe(bodyOf(failing[name] ?? [undefined]));
      // Cut short, not ended as if whole: the client can tell the stream failed.
      expect(arrived.complete).toBe(false);
      expect(logged).toHaveBeenCalled();
    } finally {
      logged.mockRestore();
    }
  });
});

describe('the local server, streaming handlers however they write', () => {
  it.each(Object.keys(scenarios))('%s: the whole body arrives, twice on one connection', async (name) => {
    current = name;
    // Twice: a body's leftovers would spoil the next answer on the same keep-alive connection.
    const whole = { text: bodyOf(scenarios[name] ?? [undefined]), complete: true };
    expect([await getWhatArrives(), await getWhatArrives()]).toEqual([whole, whole]);
  });
});
