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

const current = new AsyncLocalStorage<RequestRecord>();

/** Adds facts to the running request's record (a no-op outside a request). */
export function annotate(fields: Partial<RequestRecord>): void {
  const record = current.getStore();
  if (record) Object.assign(record, fields);
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
    const result = await current.run(record, run);
    record.status = statusOf(result);
    return result;
  } finally {
    record.latency_ms = Math.round((performance.now() - started) * 100) / 100;
    logger.info('request', { ...record });
    publish(record);
  }
}

/** Times an upstream call into the request's record. */
export async function timeUpstream<T>(call: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await call();
  } finally {
    annotate({ upstream_latency_ms: Math.round(performance.now() - started) });
  }
}
