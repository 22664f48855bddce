import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
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

const scenarios: Record<
  string,
  { readonly run: (stream: ResponseStream) => Promise<void>; readonly body: string }
> = {
  'JSON, one write and the end in one tick': {
    run: async (stream) => {
      const body = open(stream, 'application/json');
      body.write('{"a":1}');
      body.end();
    },
    body: '{"a":1}',
  },
  'JSON, two writes and the end in one tick': {
    run: async (stream) => {
      const body = open(stream, 'application/json');
      body.write('{"a":');
      body.write('1}');
      body.end();
    },
    body: '{"a":1}',
  },
  'JSON, a write, then in the next tick a write and the end': {
    run: async (stream) => {
      const body = open(stream, 'application/json');
      body.write('{"a":');
      await tick();
      body.write('1}');
      body.end();
    },
    body: '{"a":1}',
  },
  'JSON, writes across ticks, the end left to the server': {
    run: async (stream) => {
      const body = open(stream, 'application/json');
      body.write('{"a":');
      await tick();
      body.write('1}');
    },
    body: '{"a":1}',
  },
  'no prelude, two writes': {
    run: async (stream) => {
      stream.write('A');
      stream.write('B');
      stream.end();
    },
    body: 'AB',
  },
  'an event stream, events and the end in one tick': {
    run: async (stream) => {
      const body = open(stream, 'text/event-stream');
      body.write('event: delta\n\n');
      body.write('event: done\n\n');
      body.end();
    },
    body: 'event: delta\n\nevent: done\n\n',
  },
  'an event stream, the last event and the end a tick later': {
    run: async (stream) => {
      const body = open(stream, 'text/event-stream');
      body.write('event: delta\n\n');
      await tick();
      body.write('event: done\n\n');
      body.end();
    },
    body: 'event: delta\n\nevent: done\n\n',
  },
};

let current = '';
const handler = awsLambdaStandIn.streamifyResponse(async (_event, stream) => scenarios[current]?.run(stream));
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

function get(): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      { port, host: '127.0.0.1', path: route?.path, method: 'GET', headers: { 'x-api-key': 'key' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          text += chunk;
        });
        res.on('end', () => resolve(text));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('the local server, streaming handlers however they write', () => {
  it.each(Object.keys(scenarios))('%s: the whole body arrives, twice on one connection', async (name) => {
    current = name;
    // Twice: a body's leftovers would spoil the next answer on the same keep-alive connection.
    expect([await get(), await get()]).toEqual([scenarios[name]?.body, scenarios[name]?.body]);
  });
});
