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
  /** Requests whose client went away before the response was complete. */
  readonly aborted: ReceivedRequest[];
  /** Requests to one path, e.g. `/chat/completions`. */
  requestsTo(path: string): ReceivedRequest[];
  /** The bodies of the chat completion requests received, in order. */
  completions(): CompletionBody[];
  /** Serves `response` for the next request (queued responses are used in order). */
  enqueue(...responses: ScriptedResponse[]): void;
  /** Decides the response of every request not served from the queue; undefined = built-in model. */
  respondWith(decide: ((request: ReceivedRequest) => ScriptedResponse | undefined) | undefined): void;
  reset(): void;
  close(): Promise<void>;
}

export async function startFakeOpenAi(): Promise<FakeOpenAi> {
  const requests: ReceivedRequest[] = [];
  const aborted: ReceivedRequest[] = [];
  const queue: ScriptedResponse[] = [];
  let decide: ((request: ReceivedRequest) => ScriptedResponse | undefined) | undefined;
  const standIn: RunningStandIn = await startOpenAiStandIn({
    intercept: (request) => {
      requests.push(request);
      return queue.shift() ?? decide?.(request);
    },
    onAborted: (request) => aborted.push(request),
  });
  return {
    baseURL: standIn.baseURL,
    requests,
    aborted,
    requestsTo: (path) => requests.filter((request) => request.path === path),
    completions: () =>
      requests
        .filter((request) => request.path === '/chat/completions')
        .map((request) => request.body as CompletionBody),
    enqueue: (...responses) => queue.push(...responses),
    respondWith: (next) => {
      decide = next;
    },
    reset: () => {
      requests.length = 0;
      aborted.length = 0;
      queue.length = 0;
      decide = undefined;
    },
    close: () => standIn.close(),
  };
}

/** What the handlers send to `/chat/completions`. */
export interface CompletionBody {
  readonly model: string;
  readonly messages: { role: string; content: string | unknown[] }[];
  readonly temperature?: number;
  readonly max_completion_tokens?: number;
  readonly stream?: boolean;
}

/** An OpenAI-style error body. */
export function openAiError(message: string, type = 'server_error'): unknown {
  return { error: { message, type, param: null, code: null } };
}
