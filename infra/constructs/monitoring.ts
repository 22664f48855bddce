import { Aws, Duration, Fn, Stack } from 'aws-cdk-lib';
import { type IApiKey, Period, type QuotaSettings, type Stage } from 'aws-cdk-lib/aws-apigateway';
import {
  Alarm,
  AlarmStatusWidget,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IMetric,
  MathExpression,
  Metric,
  TextWidget,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { FilterPattern, type ILogGroup, MetricFilter } from 'aws-cdk-lib/aws-logs';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import { DEFAULT_METRICS_SERVICE, DEFAULT_STACK_NAME } from '../config';

/** The CloudWatch namespace of the functions' EMF metrics (Powertools `POWERTOOLS_METRICS_NAMESPACE`). */
export const METRICS_NAMESPACE = 'ChatProxy';

/**
 * Where a stack's functions put their EMF metrics (`POWERTOOLS_METRICS_NAMESPACE`,
 * `POWERTOOLS_SERVICE_NAME`). The `service` dimension is `chat-proxy` for the stack of the default
 * name and any other stack's own name, unique in its account and Region like the stack's, so two
 * stacks keep their metrics, and their alarms, apart. The alarms read exactly that dimension.
 */
export function appMetrics(stackName: string): { readonly namespace: string; readonly service: string } {
  return {
    namespace: METRICS_NAMESPACE,
    service: stackName === DEFAULT_STACK_NAME ? DEFAULT_METRICS_SERVICE : stackName,
  };
}

/** The metric the access log filter counts per API key, in `METRICS_NAMESPACE`. */
export const REQUESTS_PER_API_KEY = 'RequestsPerApiKey';

/** A CloudWatch alarm on metric math can read at most 10 metrics. */
const MAX_METRICS_PER_ALARM = 10;

export interface MonitoredFunction {
  /** The route id, used in alarm names and graph labels. */
  readonly id: string;
  readonly function: IFunction;
  /** Streams its reply: its duration is the length of a turn, not a latency to alarm on. */
  readonly streaming: boolean;
}

export interface MonitoringProps {
  /** The API stage whose metrics are watched. */
  readonly stage: Stage;
  /** The stage's JSON access log group, for the per-key request count. */
  readonly accessLogGroup: ILogGroup;
  readonly functions: readonly MonitoredFunction[];
  /** The API keys, by tenant name, and the quota each gets. */
  readonly apiKeys: ReadonlyMap<string, IApiKey>;
  readonly quota: QuotaSettings;
  /**
   * Subscribes this address to an SNS topic that every alarm notifies.
   * @default - no topic
   */
  readonly alarmEmail?: string;
  /**
   * The MemoryDB cluster, when the stack runs one.
   * @default - no store alarms or graphs
   */
  readonly memoryDbClusterName?: string;
  /**
   * Share of requests answered 5xx, over 5 minutes, that raises the alarm.
   * @default 0.05
   */
  readonly serverErrorRate?: number;
  /**
   * p99 duration of a buffered route's function that raises the alarm.
   * @default Duration.seconds(10)
   */
  readonly bufferedLatencyP99?: Duration;
  /**
   * Share of turns whose OpenAI call failed, over 5 minutes, that raises the alarm.
   * @default 0.1
   */
  readonly upstreamErrorRate?: number;
  /**
   * Share of a key's quota used that raises its alarm.
   * @default 0.8
   */
  readonly quotaWarning?: number;
}

/**
 * Alarms and a dashboard for the chat proxy: 5xx rate, buffered latency, function errors and
 * throttles, OpenAI error rate, quota use per API key and, with MemoryDB, store memory. Every
 * alarm notifies the optional SNS topic, on alarm and on recovery.
 */
export class Monitoring extends Construct {
  readonly alarms: Alarm[] = [];
  readonly dashboard: Dashboard;
  readonly topic: Topic | undefined;

  private readonly stackName: string;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    this.stackName = Stack.of(this).stackName;
    const metricsOf = appMetrics(this.stackName);
    const fiveMinutes = Duration.minutes(5);

    if (props.alarmEmail !== undefined) {
      this.topic = new Topic(this, 'AlarmTopic', {
        displayName: `${this.stackName} alarms`,
        // Alarm notifications carry no secret; a KMS key would also need a key policy for CloudWatch.
        enforceSSL: true,
      });
      this.topic.addSubscription(new EmailSubscription(props.alarmEmail));
    }

    const api = {
      requests: props.stage.metricCount({ period: fiveMinutes, statistic: 'Sum', label: 'Requests' }),
      clientErrors: props.stage.metricClientError({ period: fiveMinutes, statistic: 'Sum', label: '4xx' }),
      serverErrors: props.stage.metricServerError({ period: fiveMinutes, statistic: 'Sum', label: '5xx' }),
      latency: (statistic: string) =>
        props.stage.metricLatency({ period: fiveMinutes, statistic, label: `Latency ${statistic}` }),
      integrationLatency: (statistic: string) =>
        props.stage.metricIntegrationLatency({
          period: fiveMinutes,
          statistic,
          label: `Integration latency ${statistic}`,
        }),
    };
    const app = (metricName: string, statistic = 'Sum') =>
      new Metric({
        namespace: metricsOf.namespace,
        metricName,
        dimensionsMap: { service: metricsOf.service },
        statistic,
        period: fiveMinutes,
        label: statistic === 'Sum' ? metricName : `${metricName} ${statistic}`,
      });

    // 5XXError is 1 for a failed request and 0 otherwise, so its average is the error rate.
    const serverErrorRate = props.serverErrorRate ?? 0.05;
    this.alarm('ApiServerErrors', {
      metric: props.stage.metricServerError({ period: fiveMinutes, statistic: 'Average' }),
      threshold: serverErrorRate,
      evaluationPeriods: 3,
      datapointsToAlarm: 2,
      description: `At least ${serverErrorRate * 100}% of API requests answered 5xx in 2 of 3 five-minute periods`,
    });

    // Streamed turns last as long as the model writes, so API Gateway's Latency mixes minutes-long
    // streams with fast reads. The buffered routes' function duration is what a client waits for.
    const buffered = props.functions.filter((fn) => !fn.streaming);
    const latencyLimit = props.bufferedLatencyP99 ?? Duration.seconds(10);
    this.perGroup('BufferedLatencyP99', buffered, {
      expression: 'MAX',
      metric: (fn) => fn.function.metricDuration({ period: fiveMinutes, statistic: 'p99' }),
      threshold: latencyLimit.toMilliseconds(),
      evaluationPeriods: 3,
      datapointsToAlarm: 2,
      description: (ids) =>
        `p99 duration of ${latencyLimit.toSeconds()} s or more in 2 of 3 five-minute periods, for one of: ${ids}`,
    });
    this.perGroup('FunctionErrors', props.functions, {
      expression: 'SUM',
      metric: (fn) => fn.function.metricErrors({ period: fiveMinutes, statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      description: (ids) =>
        `An invocation failed (an unhandled error or a timeout; handled errors are responses) in: ${ids}`,
    });
    this.perGroup('FunctionThrottles', props.functions, {
      expression: 'SUM',
      metric: (fn) => fn.function.metricThrottles({ period: fiveMinutes, statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      description: (ids) => `Lambda refused an invocation for lack of concurrency in: ${ids}`,
    });

    const upstreamErrorRate = props.upstreamErrorRate ?? 0.1;
    this.alarm('UpstreamErrors', {
      metric: new MathExpression({
        expression: 'IF(turns > 0, FILL(errors, 0) / turns, 0)',
        usingMetrics: { turns: app('Turns'), errors: app('UpstreamErrors') },
        period: fiveMinutes,
        label: 'Upstream error rate',
      }),
      threshold: upstreamErrorRate,
      evaluationPeriods: 3,
      datapointsToAlarm: 2,
      description: `At least ${upstreamErrorRate * 100}% of turns failed at OpenAI in 2 of 3 five-minute periods`,
    });

    const perKeyRequests = this.quotaAlarms(props);

    if (props.memoryDbClusterName !== undefined) {
      this.alarm('StoreMemory', {
        metric: memoryDbMetric(props.memoryDbClusterName, 'DatabaseMemoryUsagePercentage', 'Maximum'),
        threshold: 80,
        evaluationPeriods: 3,
        datapointsToAlarm: 2,
        description:
          'MemoryDB memory at 80% or more: writes fail when it is full. Add shards or a larger node type, or expire chats',
      });
    }

    this.dashboard = new Dashboard(this, 'Dashboard', {
      // Dashboard names are global to the account, not per Region.
      dashboardName: Fn.join('-', [this.stackName, Aws.REGION]),
      defaultInterval: Duration.hours(6),
    });
    const graph = (title: string, left: IMetric[], width = 8, right: IMetric[] = []) =>
      new GraphWidget({ title, left, right, width, height: 6 });
    const perFunction = (title: string, metric: (fn: MonitoredFunction) => IMetric) =>
      graph(title, props.functions.map(metric), 12);

    this.dashboard.addWidgets(
      new TextWidget({
        markdown: `# ${this.stackName}\nAPI, functions, chats and tenants. Streamed turns count in API latency for their whole length; see the functions' duration for buffered routes.`,
        width: 24,
        height: 2,
      }),
    );
    this.dashboard.addWidgets(
      graph('Requests', [api.requests]),
      graph('4xx and 5xx', [api.clientErrors, api.serverErrors]),
      graph('API latency (ms)', [
        api.latency('p50'),
        api.latency('p99'),
        api.integrationLatency('p50'),
        api.integrationLatency('p99'),
      ]),
    );
    this.dashboard.addWidgets(
      perFunction('Function errors', (fn) =>
        fn.function.metricErrors({ period: fiveMinutes, statistic: 'Sum', label: fn.id }),
      ),
      perFunction('Function duration p99 (ms)', (fn) =>
        fn.function.metricDuration({ period: fiveMinutes, statistic: 'p99', label: fn.id }),
      ),
    );
    this.dashboard.addWidgets(
      graph('Turns', [app('Turns'), app('UpstreamErrors')]),
      graph('Tokens', [app('PromptTokens'), app('CompletionTokens')]),
      graph('Upstream latency (ms)', [app('UpstreamLatency', 'p50'), app('UpstreamLatency', 'p99')]),
    );
    this.dashboard.addWidgets(
      graph('Busy chats and idempotent replays', [app('ChatBusy'), app('IdempotentReplays')]),
      graph('Requests per API key', perKeyRequests, 16),
    );
    if (props.memoryDbClusterName !== undefined) {
      const cluster = props.memoryDbClusterName;
      this.dashboard.addWidgets(
        graph('Store memory (%)', [memoryDbMetric(cluster, 'DatabaseMemoryUsagePercentage', 'Maximum')]),
        graph('Store CPU (%)', [memoryDbMetric(cluster, 'EngineCPUUtilization', 'Maximum')]),
        graph('Store connections', [memoryDbMetric(cluster, 'CurrConnections', 'Sum')]),
      );
    }
    this.dashboard.addWidgets(new AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24 }));
  }

  /**
   * One alarm per API key on its requests over the quota period (or the last 7 days, the longest
   * an alarm can look back). Counted from the access log, as API Gateway has no per-key metric.
   * It approximates the usage plan's count: the window slides instead of resetting with the
   * quota, so it may warn early but not late (for a monthly quota it warns on a 7-day pace).
   */
  private quotaAlarms(props: MonitoringProps): IMetric[] {
    new MetricFilter(this, 'RequestsPerApiKey', {
      logGroup: props.accessLogGroup,
      // Requests with a key, except those the usage plan turned away (429), which use no quota.
      filterPattern: FilterPattern.all(
        FilterPattern.regexValue('$.apiKeyId', '=', '^[A-Za-z0-9]+$'),
        FilterPattern.stringValue('$.status', '!=', '429'),
      ),
      metricNamespace: METRICS_NAMESPACE,
      metricName: REQUESTS_PER_API_KEY,
      metricValue: '1',
      dimensions: { apiKeyId: '$.apiKeyId' },
    });

    const quotaDays = { [Period.DAY]: 1, [Period.WEEK]: 7, [Period.MONTH]: 30 }[
      props.quota.period ?? Period.DAY
    ];
    const windowDays = Math.min(quotaDays, 7);
    const share = props.quotaWarning ?? 0.8;
    const limit = props.quota.limit ?? 10_000;
    const threshold = Math.ceil(share * limit * (windowDays / quotaDays));
    const perKey: IMetric[] = [];
    for (const [name, apiKey] of props.apiKeys) {
      const requests = new Metric({
        namespace: METRICS_NAMESPACE,
        metricName: REQUESTS_PER_API_KEY,
        dimensionsMap: { apiKeyId: apiKey.keyId },
        statistic: 'Sum',
        period: Duration.days(windowDays),
      });
      perKey.push(requests.with({ period: Duration.minutes(5), label: name }));
      this.alarm(`Quota-${name}`, {
        metric: requests,
        threshold,
        evaluationPeriods: 1,
        description: `Tenant "${name}" made ${threshold} requests in ${windowDays} day(s): ${share * 100}% of its quota of ${limit} per ${String(props.quota.period ?? Period.DAY).toLowerCase()} (approximate)`,
      });
    }
    // This stack's keys by tenant name (other stacks in the account count into the same metric,
    // each under its own key ids).
    return perKey;
  }

  /**
   * Alarms on a metric of every function, combined with SUM or MAX: one alarm per 10 functions,
   * the most a metric math alarm can read.
   */
  private perGroup(
    name: string,
    functions: readonly MonitoredFunction[],
    options: {
      readonly expression: 'SUM' | 'MAX';
      readonly metric: (fn: MonitoredFunction) => IMetric;
      readonly threshold: number;
      readonly evaluationPeriods: number;
      readonly datapointsToAlarm?: number;
      readonly description: (ids: string) => string;
    },
  ): void {
    for (let start = 0; start < functions.length; start += MAX_METRICS_PER_ALARM) {
      const group = functions.slice(start, start + MAX_METRICS_PER_ALARM);
      const usingMetrics = Object.fromEntries(group.map((fn, index) => [`f${index}`, options.metric(fn)]));
      const suffix = start === 0 ? '' : `-${start / MAX_METRICS_PER_ALARM + 1}`;
      this.alarm(`${name}${suffix}`, {
        metric: new MathExpression({
          expression: `${options.expression}([${Object.keys(usingMetrics).join(',')}])`,
          usingMetrics,
          period: Duration.minutes(5),
          label: name,
        }),
        threshold: options.threshold,
        evaluationPeriods: options.evaluationPeriods,
        datapointsToAlarm: options.datapointsToAlarm,
        description: options.description(group.map((fn) => fn.id).join(', ')),
      });
    }
  }

  private alarm(
    name: string,
    options: {
      readonly metric: IMetric;
      readonly threshold: number;
      readonly evaluationPeriods: number;
      readonly datapointsToAlarm?: number;
      readonly description: string;
    },
  ): Alarm {
    const alarm = new Alarm(this, name, {
      alarmName: `${this.stackName}-${name}`,
      alarmDescription: options.description,
      metric: options.metric,
      threshold: options.threshold,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: options.evaluationPeriods,
      datapointsToAlarm: options.datapointsToAlarm,
      // No traffic is not a failure.
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    if (this.topic) {
      const action = new SnsAction(this.topic);
      alarm.addAlarmAction(action);
      alarm.addOkAction(action);
    }
    this.alarms.push(alarm);
    return alarm;
  }
}

function memoryDbMetric(clusterName: string, metricName: string, statistic: string): Metric {
  return new Metric({
    namespace: 'AWS/MemoryDB',
    metricName,
    dimensionsMap: { ClusterName: clusterName },
    statistic,
    period: Duration.minutes(5),
    label: metricName,
  });
}
