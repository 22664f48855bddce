import { createHash, randomUUID } from 'node:crypto';
import {
  chatRepository,
  type IdempotencyScope,
  type KeptAnswer,
  type StoredResponse,
} from './chat-repository';
import { loadTurnConfig } from './config';
import { IdempotencyKeyReusedError, RequestInProgressError, ValidationError } from './errors';
import { type ApiEvent, type ApiResult, header, type JsonResult, rawBody } from './http';
import { annotate } from './observability';

const { leaseMs, idempotencyTtlSeconds } = loadTurnConfig();

/** 1 to 255 printable ASCII characters, as the contract says. */
const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

/** Marks an answer served from the idempotency record rather than run again. */
export const REPLAY_HEADER = 'Idempotent-Replayed';

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export type Outcome<T> = { readonly replay: StoredResponse } | { readonly result: T };

/**
 * The claimed record of a request that runs. Work that writes in the record's scope (its chat, or
 * the tenant) can keep the request's answer in the same write (a turn's commit, a clear and the
 * system prompts do): then no lost reply or failed later write can let a retry run the work again.
 * It says so with `keptInWrite()`.
 */
export interface ClaimedRecord {
  readonly id: string;
  /** What the work's write keeps in this record for `response`. */
  keeping(response: StoredResponse): KeptAnswer;
  keptInWrite(): void;
}

/**
 * Runs a POST at most once per Idempotency-Key (per tenant and route, for a day): a repeat with
 * the same body gets the kept answer without running again, a repeat with another body is 422,
 * and a repeat while the first still runs is 409 (for `runningMs`, by default a turn's lease, after
 * which a claim whose request died is free again). Only answers that `keep` returns are kept,
 * and a failed request gives its key back, so the client's retry runs for real; unless its work
 * kept its answer in the same write (see `ClaimedRecord`): then that answer is replayed.
 */
export async function idempotently<T>(
  event: ApiEvent,
  scope: IdempotencyScope,
  run: (record?: ClaimedRecord) => Promise<T>,
  keep: (result: T) => StoredResponse | undefined,
  options: { readonly runningMs?: number } = {},
): Promise<Outcome<T>> {
  const key = header(event, 'Idempotency-Key');
  if (key === undefined) return { result: await run() };
  if (!IDEMPOTENCY_KEY.test(key)) {
    throw new ValidationError(
      'invalid_idempotency_key',
      'Idempotency-Key must be 1 to 255 printable ASCII characters',
    );
  }
  // The route is the method and the concrete path; the key's value is hashed, so any printable
  // character is safe in the Redis key.
  const id = sha256(`${event.httpMethod} ${event.path}\n${key}`);
  const fingerprint = sha256(rawBody(event));

  const claim = await chatRepository.claimIdempotency(
    scope,
    id,
    fingerprint,
    options.runningMs ?? leaseMs,
    randomUUID(),
  );
  if (claim.state === 'mismatch') throw new IdempotencyKeyReusedError();
  if (claim.state === 'running') throw new RequestInProgressError();
  if (claim.state === 'done') {
    annotate({ replayed: true });
    return { replay: claim.response };
  }

  let keptInWrite = false;
  const record: ClaimedRecord = {
    id,
    keeping: (response) => ({ id, fingerprint, response, keepSeconds: idempotencyTtlSeconds }),
    keptInWrite: () => {
      keptInWrite = true;
    },
  };
  let result: T;
  try {
    result = await run(record);
  } catch (error) {
    // A record whose answer was kept stays (the repository checks), so the retry replays it.
    await chatRepository.abandonIdempotency(scope, id).catch(() => undefined);
    throw error;
  }
  if (keptInWrite) return { result };
  const kept = keep(result);
  if (kept === undefined) await chatRepository.abandonIdempotency(scope, id);
  else await chatRepository.completeIdempotency(scope, id, fingerprint, kept, idempotencyTtlSeconds);
  return { result };
}

/** `idempotently` for a buffered route whose answer is an API Gateway result: 2xx answers are kept. */
export async function idempotentResult(
  event: ApiEvent,
  scope: IdempotencyScope,
  run: (record?: ClaimedRecord) => Promise<JsonResult>,
): Promise<ApiResult> {
  const outcome = await idempotently(event, scope, run, (result) =>
    result.statusCode < 300 ? result : undefined,
  );
  if ('result' in outcome) return outcome.result;
  return { ...outcome.replay, headers: { ...outcome.replay.headers, [REPLAY_HEADER]: 'true' } };
}
