import {
  type ReceivedRequest,
  type RunningStandIn,
  type ScriptedResponse,
  startOpenAiStandIn,
} from '../../local/openai-stand-in';

/**
 * The fake OpenAI the tests talk to over HTTP: the offline stand-in model, plus a record of every
 * request and a queue of scripted responses (errors, delays, hangs) served first, one per request.
 */
export interface FakeOpenAi {
  readonly baseURL: string;
  readonly requests: ReceivedRequest[];
  /** Requests to one path, e.g. `/chat/completions`. */
  requestsTo(path: string): ReceivedRequest[];
  /** Serves `response` for the next request (queued responses are used in order). */
  enqueue(...responses: ScriptedResponse[]): void;
  reset(): void;
  close(): Promise<void>;
}

export async function startFakeOpenAi(): Promise<FakeOpenAi> {
  const requests: ReceivedRequest[] = [];
  const queue: ScriptedResponse[] = [];
  const standIn: RunningStandIn = await startOpenAiStandIn({
    intercept: (request) => {
      requests.push(request);
      return queue.shift();
    },
  });
  return {
    baseURL: standIn.baseURL,
    requests,
    requestsTo: (path) => requests.filter((request) => request.path === path),
    enqueue: (...responses) => queue.push(...responses),
    reset: () => {
      requests.length = 0;
      queue.length = 0;
    },
    close: () => standIn.close(),
  };
}

/** An OpenAI-style error body. */
export function openAiError(message: string, type = 'server_error'): unknown {
  return { error: { message, type, param: null, code: null } };
}
