import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { routes } from '../../functions/routes';
import { resourcesByRoute, synthesize } from './synth';

type Template = ReturnType<typeof synthesize>['template'];

interface AlarmProperties {
  readonly AlarmName: string;
  readonly Threshold: number;
  readonly ComparisonOperator: string;
  readonly EvaluationPeriods: number;
  readonly Period?: number;
  readonly MetricName?: string;
  readonly Namespace?: string;
  readonly Statistic?: string;
  readonly Dimensions?: { Name: string; Value: unknown }[];
  readonly Metrics?: {
    Id: string;
    Expression?: string;
    MetricStat?: {
      Metric: { MetricName: string; Namespace: string; Dimensions: { Name: string; Value: unknown }[] };
      Stat: string;
    };
  }[];
  readonly AlarmActions?: unknown[];
  readonly OKActions?: unknown[];
}

function alarms(template: Template): AlarmProperties[] {
  return Object.values(template.findResources('AWS::CloudWatch::Alarm')).map(
    (alarm) => alarm.Properties as AlarmProperties,
  );
}

function alarmNamed(template: Template, name: string): AlarmProperties {
  const alarm = alarms(template).find((each) => each.AlarmName === `ChatProxy-${name}`);
  if (alarm === undefined) throw new Error(`No alarm ChatProxy-${name}`);
  return alarm;
}

/** The functions (by logical id) whose `metricName` an alarm family reads, over all its alarms. */
function functionsWatched(template: Template, family: string, metricName: string): (string | undefined)[] {
  return alarms(template)
    .filter((alarm) => new RegExp(`^ChatProxy-${family}(-\\d+)?$`).test(alarm.AlarmName))
    .flatMap((alarm) => alarm.Metrics ?? [])
    .filter((metric) => metric.MetricStat?.Metric.MetricName === metricName)
    .map((metric) => (metric.MetricStat?.Metric.Dimensions[0]?.Value as { Ref: string } | undefined)?.Ref);
}

describe('Monitoring, by default', () => {
  const { template } = synthesize();
  const byRoute = resourcesByRoute(template);
  const functionIds = (filter: (streaming: boolean) => boolean) =>
    [...byRoute.values()]
      .filter(({ route }) => filter(route.streaming === true))
      .map((r) => r.functionId)
      .sort();

  it('alarms when 5% of requests or more answer 5xx in 2 of 3 five-minute periods', () => {
    expect(alarmNamed(template, 'ApiServerErrors')).toMatchObject({
      MetricName: '5XXError',
      Namespace: 'AWS/ApiGateway',
      Statistic: 'Average',
      Period: 300,
      Threshold: 0.05,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      EvaluationPeriods: 3,
      DatapointsToAlarm: 2,
      TreatMissingData: 'notBreaching',
    });
  });

  it('alarms on the p99 duration of every buffered route, and of no streaming route', () => {
    expect(functionsWatched(template, 'BufferedLatencyP99', 'Duration').sort()).toEqual(
      functionIds((s) => !s),
    );
    for (const alarm of alarms(template).filter((each) => each.AlarmName.includes('BufferedLatencyP99'))) {
      expect(alarm.Threshold).toBe(10_000);
      expect(alarm.Metrics?.[0]?.Expression).toMatch(/^MAX\(\[/);
      expect(
        alarm.Metrics?.filter((metric) => metric.MetricStat).every((m) => m.MetricStat?.Stat === 'p99'),
      ).toBe(true);
    }
  });

  it.each([
    ['FunctionErrors', 'Errors'],
    ['FunctionThrottles', 'Throttles'],
  ])('alarms on the %s of every function, at the first one', (family, metricName) => {
    expect(functionsWatched(template, family, metricName).sort()).toEqual(functionIds(() => true));
    const first = alarmNamed(template, family);
    expect(first.Threshold).toBe(1);
    expect(first.Metrics?.[0]?.Expression).toMatch(/^SUM\(\[/);
  });

  it('reads at most 10 metrics per alarm, the CloudWatch limit for metric math', () => {
    for (const alarm of alarms(template)) {
      expect(
        alarm.Metrics?.filter((metric) => metric.MetricStat).length ?? 0,
        alarm.AlarmName,
      ).toBeLessThanOrEqual(10);
    }
    expect(routes.length).toBeGreaterThan(10);
    expect(alarmNamed(template, 'FunctionErrors-2')).toBeDefined();
  });

  it("alarms when 10% of turns or more fail at OpenAI, from the functions' EMF metrics", () => {
    const alarm = alarmNamed(template, 'UpstreamErrors');
    const byId = Object.fromEntries((alarm.Metrics ?? []).map((metric) => [metric.Id, metric]));

    expect(alarm.Threshold).toBe(0.1);
    expect(byId.expr_1?.Expression).toBe('IF(turns > 0, FILL(errors, 0) / turns, 0)');
    for (const [id, metricName] of [
      ['turns', 'Turns'],
      ['errors', 'UpstreamErrors'],
    ] as const) {
      expect(byId[id]?.MetricStat).toEqual({
        Metric: {
          Namespace: 'ChatProxy',
          MetricName: metricName,
          Dimensions: [{ Name: 'service', Value: 'chat-proxy' }],
        },
        Period: 300,
        Stat: 'Sum',
      });
    }
  });

  it("alarms when a key's requests over the last day reach 80% of its daily quota", () => {
    const keyId = Object.keys(template.findResources('AWS::ApiGateway::ApiKey'))[0];

    expect(alarmNamed(template, 'Quota-default')).toMatchObject({
      Namespace: 'ChatProxy',
      MetricName: 'RequestsPerApiKey',
      Dimensions: [{ Name: 'apiKeyId', Value: { Ref: keyId } }],
      Statistic: 'Sum',
      Period: 86_400,
      Threshold: 8_000,
    });
  });

  it('counts requests per API key from the access log, leaving out those without a key or refused with 429', () => {
    template.hasResourceProperties('AWS::Logs::MetricFilter', {
      LogGroupName: { Ref: Match.stringLikeRegexp('^ApiAccessLogs') },
      FilterPattern: '{ ($.apiKeyId = %^[A-Za-z0-9]+$%) && ($.status != "429") }',
      MetricTransformations: [
        {
          MetricNamespace: 'ChatProxy',
          MetricName: 'RequestsPerApiKey',
          MetricValue: '1',
          Dimensions: [{ Key: 'apiKeyId', Value: '$.apiKeyId' }],
        },
      ],
    });
  });

  it('has no store alarm and no SNS topic, so alarms only show in the console', () => {
    expect(alarms(template).map((alarm) => alarm.AlarmName)).not.toContain('ChatProxy-StoreMemory');
    template.resourceCountIs('AWS::SNS::Topic', 0);
    for (const alarm of alarms(template)) expect(alarm.AlarmActions, alarm.AlarmName).toBeUndefined();
  });

  it('has a dashboard with requests, errors, latency, per-function graphs, turns and tokens', () => {
    const dashboard = JSON.stringify(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]);

    for (const metric of [
      'Count',
      '4XXError',
      '5XXError',
      'Latency',
      'Errors',
      'Duration',
      'Turns',
      'PromptTokens',
      'CompletionTokens',
      'UpstreamLatency',
      'ChatBusy',
      'IdempotentReplays',
    ]) {
      expect(dashboard).toContain(`\\"${metric}\\"`);
    }
    expect(dashboard).toContain('p99');
    // One line per tenant of this stack, by name: not a search that would list other stacks' keys.
    expect(dashboard).not.toContain('SEARCH(');
    expect(dashboard).toContain('\\"label\\":\\"default\\"');
  });
});

describe('Monitoring, with other quotas and an alarm e-mail', () => {
  it.each([
    { quotaPeriod: 'WEEK', period: 7 * 86_400, threshold: 800 },
    // A month is longer than an alarm can look back: 7 days at the monthly pace.
    { quotaPeriod: 'MONTH', period: 7 * 86_400, threshold: Math.ceil(0.8 * 1000 * (7 / 30)) },
  ])('warns on a $quotaPeriod quota over the last $period seconds', ({ quotaPeriod, period, threshold }) => {
    const { template } = synthesize({ quotaPeriod, quotaLimit: 1000 });

    expect(alarmNamed(template, 'Quota-default')).toMatchObject({ Period: period, Threshold: threshold });
  });

  it('notifies an SNS topic, over TLS only, on alarm and on recovery, and mails it to the address', () => {
    const { template } = synthesize({ alarmEmail: 'ops@example.com', apiKeys: ['a', 'b'] });
    const topicId = Object.keys(template.findResources('AWS::SNS::Topic'))[0];

    template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
      TopicArn: { Ref: topicId },
    });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: [
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ],
      },
    });
    for (const alarm of alarms(template)) {
      expect(alarm.AlarmActions, alarm.AlarmName).toEqual([{ Ref: topicId }]);
      expect(alarm.OKActions, alarm.AlarmName).toEqual([{ Ref: topicId }]);
    }
    expect(alarms(template).filter((alarm) => alarm.AlarmName.startsWith('ChatProxy-Quota-'))).toHaveLength(
      2,
    );
    template.hasOutput('AlarmTopicArn', { Value: { Ref: topicId } });
  });

  it('keeps a second stack apart: its own alarm names, and its own service in functions and alarms', () => {
    const { template } = synthesize({ stackName: 'ChatProxy-staging' });

    const names = alarms(template).map((alarm) => alarm.AlarmName);
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) expect(name).toMatch(/^ChatProxy-staging-/);
    const services = new Set<string>();
    JSON.stringify(template.toJSON(), (key, value) => {
      if (key === 'Dimensions' && Array.isArray(value)) {
        for (const dimension of value) if (dimension?.Name === 'service') services.add(dimension.Value);
      }
      return value;
    });
    expect([...services]).toEqual(['ChatProxy-staging']);
    for (const fn of Object.values(template.findResources('AWS::Lambda::Function'))) {
      expect(fn.Properties.Environment.Variables.POWERTOOLS_SERVICE_NAME).toBe('ChatProxy-staging');
    }
  });
});
