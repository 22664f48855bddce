import type { ChatMessage, ChatRef, StoredResponse } from './chat-repository';
import { loadTurnConfig } from './config';
import { type ApiEvent, json, wantsStream } from './http';
import { idempotently, REPLAY_HEADER } from './idempotency';
import { annotate } from './observability';
import type { Reply } from './streaming-route';
import { runTurn, streamTurn, type TurnReply } from './turn';

const { leaseMs } = loadTurnConfig();
/** Beyond a turn's wait and lease: the time between the claim and the first lease request. */
const CLAIM_MARGIN_MS = 1000;

/** What a retry of a turn gets: the turn's JSON answer (a stream replays it as events). */
function keptAnswer(result: TurnReply): StoredResponse {
  return json(200, result) as StoredResponse;
}

/** The options of a turn request body. */
export interface TurnRequest {
  readonly stream?: boolean;
  readonly wait_ms?: number;
}

/**
 * Answers a turn (`/chat` or `/img`) buffered or streamed, as the client asked, at most once per
 * Idempotency-Key. A replayed turn is sent the way the retry asks for it: the kept JSON, or the
 * kept reply as one `delta` and its `done` event.
 */
export async function answerTurn(
  event: ApiEvent,
  reply: Reply,
  chat: ChatRef,
  user: ChatMessage,
  request: TurnRequest,
): Promise<void> {
  const stream = wantsStream(event, request.stream);
  const waitMs = request.wait_ms ?? 0;
  const outcome = await idempotently(
    event,
    chat,
    (record): Promise<TurnReply | undefined> => {
      // A replayed answer is not an attempt: only turns that run count.
      annotate({ turn_attempted: true });
      // The answer is kept with the turn itself, in its commit.
      const keep = record && { record, answer: keptAnswer };
      return stream
        ? streamTurn(chat, user, { waitMs, keep, open: () => reply.events(), signal: reply.signal })
        : runTurn(chat, user, { waitMs, keep });
    },
    (result) => (result === undefined ? undefined : keptAnswer(result)),
    // A retry finds the key running while the turn waits for its chat and while it runs (the
    // lease may be taken a little after the wait's end: the margin); a streamed turn renews it
    // with its lease.
    { runningMs: leaseMs + waitMs + CLAIM_MARGIN_MS },
  );

  if ('result' in outcome) {
    if (!stream && outcome.result) reply.send(json(200, outcome.result));
    return;
  }
  const kept = outcome.replay;
  if (stream && kept.statusCode === 200) {
    const turn = JSON.parse(kept.body) as TurnReply;
    const events = reply.events({ [REPLAY_HEADER]: 'true' });
    events.send('delta', { content: turn.content });
    events.send('done', turn);
    return;
  }
  reply.send({ ...kept, headers: { ...kept.headers, [REPLAY_HEADER]: 'true' } });
}
