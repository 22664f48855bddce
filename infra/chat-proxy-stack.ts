import { CfnOutput, Duration, Fn, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { routes } from '../functions/routes';
import { loadChatConfig, loadLimits } from '../functions/shared/config';
import { requestSchemas } from '../functions/shared/schemas';
import { apiKeyLogicalName, readStackConfig } from './config';
import { ChatProxyApi } from './constructs/api';
import { MemoryDbStore } from './constructs/memorydb-store';
import { appMetrics, type MonitoredFunction, Monitoring } from './constructs/monitoring';
import { Network } from './constructs/network';
import { RouteFunction } from './constructs/route-function';
import { Secrets } from './constructs/secrets';

/**
 * How long a streamed turn may run, in API Gateway and in Lambda. API Gateway streams for at most
 * 15 minutes (idle 5 minutes on a Regional API); the functions end a stream whose upstream is idle
 * for OPENAI_TIMEOUT_MS long before that.
 */
const STREAMING_TIMEOUT = Duration.minutes(10);

/**
 * The chat proxy on AWS: one function per entry of the route table behind one REST API, with
 * alarms and a dashboard, and with `storage: 'provisioned'` a MemoryDB cluster in its own VPC.
 * Settings come from CDK context (see `config.ts`).
 */
export class ChatProxyStack extends Stack {
  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    const config = readStackConfig(this.node);

    // With storage 'provisioned' the store and the functions that use it live in a VPC.
    const network =
      config.storage === 'provisioned'
        ? new Network(this, 'Network', { natGateways: config.natGateways })
        : undefined;
    const store = network
      ? new MemoryDbStore(this, 'Store', {
          vpc: network.vpc,
          subnets: network.storeSubnets,
          ...config.memoryDb,
        })
      : undefined;
    if (network && store) store.allowFrom(network.functionSecurityGroup);

    const secrets = new Secrets(this, 'Secrets', {
      openAiSecretArn: config.openAiSecretArn,
      redisSecretArn: config.redisSecretArn,
      redisUrl: store?.urlSecret,
    });

    // The same schemas, limits and models the handlers validate with, so API Gateway turns away
    // only what a handler would refuse anyway.
    const bodySchemas = requestSchemas(
      loadLimits({}),
      loadChatConfig({ OPENAI_MODEL: config.openAiModel, OPENAI_MODELS: config.chat.models?.join(',') })
        .models,
    );
    const api = new ChatProxyApi(this, 'Api', {
      stageName: config.stageName,
      apiKeyNames: config.apiKeys,
      throttle: { rateLimit: config.throttleRateLimit, burstLimit: config.throttleBurstLimit },
      quota: { limit: config.quotaLimit, period: config.quotaPeriod },
      bodySchemas,
      corsOrigins: config.corsOrigins,
      wafRateLimit: config.wafRateLimit,
    });

    const monitored: MonitoredFunction[] = [];
    for (const route of routes) {
      const needsRedis = route.needs.includes('redis');
      const routeFunction = new RouteFunction(this, route.id, {
        entry: route.entry,
        tokenizer: route.needs.includes('tokenizer'),
        description: `${route.method} ${route.path}: ${route.summary}`,
        // A streamed reply may run for minutes; buffered answers are capped at 29 s by API Gateway.
        ...(route.streaming ? { timeout: STREAMING_TIMEOUT } : {}),
        // Only the functions that use the store pay for a VPC (cold starts, NAT for OpenAI).
        ...(network && needsRedis ? { network: network.functionNetwork } : {}),
      });
      routeFunction.bindMetrics(appMetrics(this.stackName));
      routeFunction.applyChatSettings(config.openAiModel, config.chat);
      // Each function gets access to exactly what its route needs, nothing more.
      if (needsRedis) {
        routeFunction.bindRedis(secrets.redisUrl, { cluster: store !== undefined || config.redisCluster });
      }
      if (route.needs.includes('openai')) {
        routeFunction.bindOpenAi(secrets.openAiApiKey, { moderationModel: config.openAiModerationModel });
      }
      if (config.corsOrigins) routeFunction.allowOrigins(config.corsOrigins);
      api.addRoute(
        route,
        routeFunction.function,
        route.streaming ? { responseStreaming: true, timeout: STREAMING_TIMEOUT } : {},
      );
      monitored.push({ id: route.id, function: routeFunction.function, streaming: route.streaming === true });
    }

    const monitoring = new Monitoring(this, 'Monitoring', {
      stage: api.restApi.deploymentStage,
      accessLogGroup: api.accessLogGroup,
      functions: monitored,
      apiKeys: api.apiKeys,
      quota: { limit: config.quotaLimit, period: config.quotaPeriod },
      alarmEmail: config.alarmEmail,
      memoryDbClusterName: store?.clusterName,
    });

    new CfnOutput(this, 'ApiUrl', { value: api.restApi.url, description: 'Base URL of the API' });
    new CfnOutput(this, 'DashboardUrl', {
      value: Fn.join('', [
        `https://console.aws.amazon.com/cloudwatch/home?region=${this.region}#dashboards/dashboard/`,
        monitoring.dashboard.dashboardName,
      ]),
      description: 'The CloudWatch dashboard: requests, errors, latency, turns, tokens, alarms',
    });
    if (monitoring.topic) {
      new CfnOutput(this, 'AlarmTopicArn', {
        value: monitoring.topic.topicArn,
        description: 'Every alarm notifies this topic; confirm the e-mail subscription it sent',
      });
    }
    new CfnOutput(this, 'OpenAiSecretArn', {
      value: secrets.openAiApiKey.secretArn,
      description:
        'Holds the OpenAI API key: aws secretsmanager put-secret-value --secret-id ARN --secret-string sk-...',
    });
    new CfnOutput(this, 'RedisSecretArn', {
      value: secrets.redisUrl.secretArn,
      description: store
        ? 'Holds the rediss:// URL of the MemoryDB cluster, user and password included'
        : 'Holds the Redis URL: aws secretsmanager put-secret-value --secret-id ARN --secret-string rediss://...',
    });
    if (store) {
      new CfnOutput(this, 'StorePasswordSecretArn', {
        value: store.passwordSecret.secretArn,
        description: `Holds the password of the MemoryDB user ${store.userName} (README: rotation)`,
      });
    }
    for (const [name, apiKey] of api.apiKeys) {
      const suffix = apiKeyLogicalName(name);
      new CfnOutput(this, `ApiKeyId${suffix}`, {
        value: apiKey.keyId,
        description: `Id of the API key of tenant "${name}"`,
      });
      new CfnOutput(this, `ApiKeyValueCommand${suffix}`, {
        value: `aws apigateway get-api-key --api-key ${apiKey.keyId} --include-value --query value --output text --region ${this.region}`,
        description: `Prints the value of the API key of tenant "${name}", to send as x-api-key`,
      });
    }
  }
}
