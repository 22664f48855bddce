import { CfnOutput, Duration, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { routes } from '../functions/routes';
import { apiKeyLogicalName, readStackConfig } from './config';
import { ChatProxyApi } from './constructs/api';
import { RouteFunction } from './constructs/route-function';
import { Secrets } from './constructs/secrets';

/**
 * How long a streamed turn may run, in API Gateway and in Lambda. API Gateway streams for at most
 * 15 minutes (idle 5 minutes on a Regional API); the functions end a stream whose upstream is idle
 * for OPENAI_TIMEOUT_MS long before that.
 */
const STREAMING_TIMEOUT = Duration.minutes(10);

/**
 * The chat proxy on AWS: one function per entry of the route table behind one REST API. Settings
 * come from CDK context (see `config.ts`).
 */
export class ChatProxyStack extends Stack {
  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    const config = readStackConfig(this.node);

    const secrets = new Secrets(this, 'Secrets', {
      openAiSecretArn: config.openAiSecretArn,
      redisSecretArn: config.redisSecretArn,
    });

    const api = new ChatProxyApi(this, 'Api', {
      stageName: config.stageName,
      apiKeyNames: config.apiKeys,
      throttle: { rateLimit: config.throttleRateLimit, burstLimit: config.throttleBurstLimit },
      quota: { limit: config.quotaLimit, period: config.quotaPeriod },
    });

    for (const route of routes) {
      const routeFunction = new RouteFunction(this, route.id, {
        entry: route.entry,
        description: `${route.method} ${route.path}: ${route.summary}`,
        // A streamed reply may run for minutes; buffered answers are capped at 29 s by API Gateway.
        ...(route.streaming ? { timeout: STREAMING_TIMEOUT } : {}),
      });
      // Each function gets access to exactly what its route needs, nothing more.
      if (route.needs.includes('redis')) routeFunction.bindRedis(secrets.redisUrl);
      if (route.needs.includes('openai')) {
        routeFunction.bindOpenAi(secrets.openAiApiKey, {
          model: config.openAiModel,
          moderationModel: config.openAiModerationModel,
        });
      }
      api.addRoute(
        route,
        routeFunction.function,
        route.streaming ? { responseStreaming: true, timeout: STREAMING_TIMEOUT } : {},
      );
    }

    new CfnOutput(this, 'ApiUrl', { value: api.restApi.url, description: 'Base URL of the API' });
    new CfnOutput(this, 'OpenAiSecretArn', {
      value: secrets.openAiApiKey.secretArn,
      description:
        'Holds the OpenAI API key: aws secretsmanager put-secret-value --secret-id ARN --secret-string sk-...',
    });
    new CfnOutput(this, 'RedisSecretArn', {
      value: secrets.redisUrl.secretArn,
      description:
        'Holds the Redis URL: aws secretsmanager put-secret-value --secret-id ARN --secret-string rediss://...',
    });
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
