import { AsyncLocalStorage } from 'node:async_hooks';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { APIGatewayProxyEvent, Context } from 'aws-lambda';
import { loadObservabilityConfig } from './config';

/**
 * Structured logs and EMF metrics (Powertools): one JSON log line per request with its route,
 * tenant (the API key id, never the key), chat, status, latency, upstream latency and tokens; and
 * metrics written to the log for CloudWatch to extract, so no API call is ever made for them. No
 * message content is logged unless LOG_CONTENT=true.
 */

const { logContent, metricsDisabled, serviceName, metricsNamespace } = loadObservabilityConfig();

export const logger = new Logger({ serviceName });

/** What one request did, filled in as it runs and logged once at its end. */
export interface RequestRecord {
  request_id: string;
  route: string;
  tenant?: string;
  chat_id?: string;
  status?: number;
  latency_ms?: number;
  upstream_latency_ms?: number;
  prompt_tokens?: number;
  completion_tokens?: number;
  error_code?: string;
  /** Set when a turn was attempted (its request was valid), whatever came of it. */
  turn_attempted?: boolean;
  /** Set when a turn stored its pair. */
  turn?: boolean;
  streamed?: boolean;
  replayed?: boolean;
  /** Only with LOG_CONTENT=true. */
  content?: unknown;
}

/**
 * Where the running request's record is found. In Lambda's default mode an execution environment
 * runs one invocation at a time, so a variable holds it, as the runtime's own InvokeStore does
 * then: an AsyncLocalStorage makes Node 20 and 22 run a hook for every promise of the process
 * (about 40 µs a turn). Where requests can overlap in one process (Lambda Managed Instances, which
 * set AWS_LAMBDA_MAX_CONCURRENCY; the local server; tests, outside Lambda) an AsyncLocalStorage
 * keeps them apart. Should requests overlap in Lambda's default mode after all, the later ones get
 * an AsyncLocalStorage from then on, and the first one's later facts are dropped, never misplaced.
 */
const overlapping = new AsyncLocalStorage<RequestRecord>();

/** Whether `env` is Lambda's default mode: one invocation at a time in this process. */
export function oneInvocationAtATime(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.AWS_LAMBDA_FUNCTION_NAME) && !('AWS_LAMBDA_MAX_CONCURRENCY' in env);
}

let oneAtATime = oneInvocationAtATime(process.env);
let sole: RequestRecord | undefined;

function currentRecord(): RequestRecord | undefined {
  return oneAtATime ? sole : overlapping.getStore();
}

/** Runs `run` as the request `record` describes, so that `annotate` reaches its record. */
async function within<T>(record: RequestRecord, run: () => Promise<T>): Promise<T> {
  if (oneAtATime && sole !== undefined) {
    oneAtATime = false;
    logger.warn(
      'Requests overlap in one Lambda execution environment: each gets a scope of its own from now on',
    );
  }
  if (!oneAtATime) return overlapping.run(record, run);
  sole = record;
  try {
    return await run();
  } finally {
    if (sole === record) sole = undefined;
  }
}

/**
 * Adds facts to the running request's record (a no-op outside a request). Work that may end after
 * its request (not awaited by it) must bind the record when it starts, as `timeUpstream` does: in
 * Lambda's default mode the record found here by then is the next request's.
 */
export function annotate(fields: Partial<RequestRecord>): void {
  const record = currentRecord();
  if (record) Object.assign(record, fields);
}

/**
 * Starts timing an upstream call of the running request. The function it answers records the
 * call's latency in that request's record, however late the exchange ends (let go after the
 * request's answer), or nowhere outside a request.
 */
export function timeUpstream(): () => void {
  const record = currentRecord();
  const started = performance.now();
  return () => {
    if (record) record.upstream_latency_ms = Math.round(performance.now() - started);
  };
}

/** Records message content, only when LOG_CONTENT=true. */
export function annotateContent(content: unknown): void {
  if (logContent) annotate({ content });
}

/**
 * One Metrics object for the container. Safe even where requests run side by side (the local
 * server, tests): a request's metrics are added and flushed in one synchronous block.
 */
const metrics = new Metrics({ namespace: metricsNamespace, serviceName });

function publish(record: RequestRecord): void {
  if (metricsDisabled) return;
  metrics.addMetric('Requests', MetricUnit.Count, 1);
  // Turns counts attempts, so UpstreamErrors / Turns is the share of turns OpenAI failed.
  if (record.turn_attempted) metrics.addMetric('Turns', MetricUnit.Count, 1);
  if (record.turn) metrics.addMetric('StoredTurns', MetricUnit.Count, 1);
  if (record.upstream_latency_ms !== undefined) {
    metrics.addMetric('UpstreamLatency', MetricUnit.Milliseconds, record.upstream_latency_ms);
  }
  // OpenAI failing a turn; a request OpenAI refused as invalid (upstream_rejected) is the client's.
  if (
    record.turn_attempted &&
    record.error_code?.startsWith('upstream_') &&
    record.error_code !== 'upstream_rejected'
  ) {
    metrics.addMetric('UpstreamErrors', MetricUnit.Count, 1);
  }
  if (record.error_code === 'chat_busy') metrics.addMetric('ChatBusy', MetricUnit.Count, 1);
  if (record.replayed) metrics.addMetric('IdempotentReplays', MetricUnit.Count, 1);
  if ((record.status ?? 0) >= 500) metrics.addMetric('ServerErrors', MetricUnit.Count, 1);
  if (record.prompt_tokens || record.completion_tokens) {
    metrics.addMetric('PromptTokens', MetricUnit.Count, record.prompt_tokens ?? 0);
    metrics.addMetric('CompletionTokens', MetricUnit.Count, record.completion_tokens ?? 0);
  }
  metrics.publishStoredMetrics();

  // Extra dimension sets go out as their own EMF documents, so the service-level ones above stay
  // what the alarms read.
  if (record.error_code) {
    metrics.addDimension('code', record.error_code);
    metrics.addMetric('Errors', MetricUnit.Count, 1);
    metrics.publishStoredMetrics();
  }
  if (record.tenant && (record.prompt_tokens || record.completion_tokens)) {
    metrics.addDimension('tenant', record.tenant);
    metrics.addMetric('PromptTokens', MetricUnit.Count, record.prompt_tokens ?? 0);
    metrics.addMetric('CompletionTokens', MetricUnit.Count, record.completion_tokens ?? 0);
    metrics.publishStoredMetrics();
  }
}

/**
 * Runs one request inside its record, then logs it and publishes its metrics. `statusOf` reads
 * the answer's status once the request is done.
 */
export async function observe<T>(
  event: APIGatewayProxyEvent,
  context: Context | undefined,
  run: () => Promise<T>,
  statusOf: (result: T) => number,
): Promise<T> {
  const record: RequestRecord = {
    request_id: context?.awsRequestId ?? event.requestContext?.requestId ?? 'unknown',
    route: `${event.httpMethod} ${event.resource}`,
  };
  const started = performance.now();
  try {
    const result = await within(record, run);
    record.status = statusOf(result);
    return result;
  } finally {
    record.latency_ms = Math.round((performance.now() - started) * 100) / 100;
    logger.info('request', { ...record });
    publish(record);
  }
}
