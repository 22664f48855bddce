import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startOpenAiStandIn } from '../local/openai-stand-in';
import { DIRECT_API_KEY, REPLY } from './fixture';

/**
 * The OpenAI stand-in in a process of its own, for the measurements through the dev server: a
 * real upstream is never in the caller's process, so the dev server's upstream call and the
 * bench's direct call (B) both cross a process boundary, as they would to OpenAI. It answers
 * `REPLY` like the in-process one, and keeps the body of the latest chat completion request that
 * was not a direct call, which `GET /last` on the side port answers (and forgets).
 *
 * Started by `startUpstreamProcess()` (bench/fixture.ts); prints one JSON line with its URLs.
 */
let last: unknown;
const standIn = await startOpenAiStandIn({
  intercept: (request) => {
    if (request.path !== '/chat/completions') return undefined;
    if (request.headers.authorization !== `Bearer ${DIRECT_API_KEY}`) last = request.body;
    return { content: REPLY };
  },
});
const side = createServer((_req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(last ?? null));
  last = undefined;
});
side.listen(0, '127.0.0.1', () => {
  const { port } = side.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ baseURL: standIn.baseURL, side: `http://127.0.0.1:${port}` })}\n`);
});
process.on('SIGTERM', () => {
  side.close();
  void standIn.close().then(() => process.exit(0));
});
