import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { routes } from '../../functions/routes';
import { FUNCTION_MEMORY_MB } from '../../infra/function-memory';
import { resourcesByRoute, SAMPLE_VALIDATION_ERROR, synthesize } from './synth';

/** The template value of a stack output, e.g. the `Ref` of the secret it names. */
function outputValue(template: ReturnType<typeof synthesize>['template'], name: string): unknown {
  const outputs = (template.toJSON() as { Outputs: Record<string, { Value: unknown }> }).Outputs;
  return outputs[name]?.Value;
}

describe('ChatProxyStack with default settings', () => {
  const { template } = synthesize();
  const byRoute = resourcesByRoute(template);
  const openAiSecret = outputValue(template, 'OpenAiSecretArn');
  const redisSecret = outputValue(template, 'RedisSecretArn');

  describe('functions', () => {
    it('creates one Lambda function per route and no other function', () => {
      template.resourceCountIs('AWS::Lambda::Function', routes.length);
      expect(new Set([...byRoute.values()].map((r) => r.functionId)).size).toBe(routes.length);
    });

    it('runs every function on arm64 and a Node.js 24 or newer runtime', () => {
      for (const { route, function: fn } of byRoute.values()) {
        expect(fn.Architectures, route.id).toEqual(['arm64']);
        const major = Number(/^nodejs(\d+)\.x$/.exec(String(fn.Runtime))?.[1]);
        expect(major, route.id).toBeGreaterThanOrEqual(24);
      }
    });

    it('gives every function 256 MB (FUNCTION_MEMORY_MB, whose heap the bench runs with) and the exported handler', () => {
      expect(FUNCTION_MEMORY_MB).toBe(256);
      template.allResourcesProperties('AWS::Lambda::Function', { MemorySize: 256, Handler: 'index.handler' });
    });

    it('gives buffered routes a 30 s timeout and streaming routes 10 minutes', () => {
      for (const { route, function: fn } of byRoute.values()) {
        expect(fn.Timeout, route.id).toBe(route.streaming ? 600 : 30);
      }
    });

    it('logs each function to its own log group kept for one month, next to the API access log', () => {
      template.resourceCountIs('AWS::Logs::LogGroup', routes.length + 1);
      template.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
      const logGroups = [...byRoute.values()].map((r) => JSON.stringify(r.function.LoggingConfig));
      expect(new Set(logGroups).size).toBe(routes.length);
    });

    it.each(routes)(
      'lets the $id function write to its own log group only, with no managed policy',
      (route) => {
        const resources = byRoute.get(route.id);
        const logGroupId = (resources?.function.LoggingConfig as { LogGroup: { Ref: string } } | undefined)
          ?.LogGroup.Ref;

        expect(resources?.role.ManagedPolicyArns, route.id).toBeUndefined();
        expect(resources?.statements).toContainEqual({
          Effect: 'Allow',
          Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
          Resource: { 'Fn::GetAtt': [logGroupId, 'Arn'] },
        });
        const logActions = (resources?.statements ?? []).flatMap((statement) =>
          [statement.Action].flat().filter((action) => String(action).startsWith('logs:')),
        );
        expect(logActions.sort()).toEqual(['logs:CreateLogStream', 'logs:PutLogEvents']);
      },
    );

    it('runs no function in a VPC', () => {
      for (const { route, function: fn } of byRoute.values()) {
        expect(fn.VpcConfig, route.id).toBeUndefined();
      }
      template.resourceCountIs('AWS::EC2::VPC', 0);
    });

    it('names the namespace and service of the metrics the alarms read', () => {
      for (const { route, environment } of byRoute.values()) {
        expect(environment.POWERTOOLS_METRICS_NAMESPACE, route.id).toBe('ChatProxy');
        expect(environment.POWERTOOLS_SERVICE_NAME, route.id).toBe('chat-proxy');
      }
    });

    it('sets neither REDIS_CLUSTER nor CORS_ALLOWED_ORIGINS', () => {
      for (const { route, environment } of byRoute.values()) {
        expect(environment, route.id).not.toHaveProperty('REDIS_CLUSTER');
        expect(environment, route.id).not.toHaveProperty('CORS_ALLOWED_ORIGINS');
      }
    });

    it('does not enable source maps through NODE_OPTIONS', () => {
      for (const { route, environment } of byRoute.values()) {
        expect(String(environment.NODE_OPTIONS ?? ''), route.id).not.toContain('--enable-source-maps');
      }
    });
  });

  describe('routes', () => {
    it.each(routes)('serves $method $path with its own function', (route) => {
      const resources = byRoute.get(route.id);

      expect(resources?.method).toBe(route.method);
      expect(resources?.path).toBe(route.path);
      expect(resources?.function.Description).toMatch(new RegExp(`^${route.method} ${route.path}: `));
    });

    it('has no method beyond those of the route table', () => {
      template.resourceCountIs('AWS::ApiGateway::Method', routes.length);
      template.allResourcesProperties('AWS::ApiGateway::Method', {
        Integration: Match.objectLike({ Type: 'AWS_PROXY', IntegrationHttpMethod: 'POST' }),
      });
    });

    it('streams the chat and image routes through response-streaming integrations over 29 s', () => {
      const streamed = routes
        .filter((route) => route.streaming)
        .map((route) => `${route.method} ${route.path}`);
      expect(streamed.sort()).toEqual(['POST /{chat_id}/chat', 'POST /{chat_id}/img']);
      for (const { route, integration } of byRoute.values()) {
        if (route.streaming) {
          expect(integration.ResponseTransferMode, route.id).toBe('STREAM');
          expect(integration.TimeoutInMillis, route.id).toBe(600_000);
          expect(JSON.stringify(integration.Uri), route.id).toMatch(/response-streaming-invocations/);
        } else {
          expect(integration.ResponseTransferMode ?? 'BUFFERED', route.id).toBe('BUFFERED');
          expect(JSON.stringify(integration.Uri), route.id).not.toMatch(/response-streaming-invocations/);
        }
      }
    });

    it('requires an API key exactly where the route table says so, always on GET / not', () => {
      for (const { route, apiKeyRequired } of byRoute.values()) {
        expect(apiKeyRequired, route.id).toBe(route.apiKeyRequired);
      }
      expect(byRoute.get('Health')?.apiKeyRequired).toBe(false);
    });
  });

  describe('secrets', () => {
    it('creates the OpenAI key and Redis URL secrets with generated placeholders, never a value', () => {
      template.resourceCountIs('AWS::SecretsManager::Secret', 2);
      template.allResourcesProperties('AWS::SecretsManager::Secret', {
        GenerateSecretString: Match.anyValue(),
        SecretString: Match.absent(),
      });
      template.hasResourceProperties('AWS::SecretsManager::Secret', {
        Description: Match.stringLikeRegexp('OpenAI API key'),
      });
      template.hasResourceProperties('AWS::SecretsManager::Secret', {
        Description: Match.stringLikeRegexp('rediss://'),
      });
    });

    it.each(routes)('lets the $id function read exactly the secrets its route needs', (route) => {
      const expected = [
        ...(route.needs.includes('openai') ? [openAiSecret] : []),
        ...(route.needs.includes('redis') ? [redisSecret] : []),
      ];

      const readable = byRoute.get(route.id)?.readableSecrets ?? [];

      expect(readable).toHaveLength(expected.length);
      expect(readable).toEqual(expect.arrayContaining(expected));
    });

    it.each(routes)('gives the $id function secret ARNs per need and no secret values', (route) => {
      const environment = byRoute.get(route.id)?.environment ?? {};

      expect(environment.OPENAI_SECRET_ARN).toEqual(
        route.needs.includes('openai') ? openAiSecret : undefined,
      );
      expect(environment.REDIS_SECRET_ARN).toEqual(route.needs.includes('redis') ? redisSecret : undefined);
      expect(environment).not.toHaveProperty('OPENAI_API_KEY');
      expect(environment).not.toHaveProperty('REDIS_URL');
    });

    it('gives every function the same default model, and no chat setting the context leaves unset', () => {
      for (const { route, environment } of byRoute.values()) {
        expect(environment.OPENAI_MODEL, route.id).toBe('gpt-4.1-mini');
        for (const name of [
          'OPENAI_MODELS',
          'MAX_CONTEXT_TOKENS',
          'CHAT_TTL_DAYS',
          'OPENAI_TEMPERATURE',
          'LOG_CONTENT',
        ]) {
          expect(environment[name], `${route.id} ${name}`).toBeUndefined();
        }
        expect(environment.OPENAI_MODERATION_MODEL, route.id).toBeUndefined();
      }
    });
  });

  describe('API', () => {
    it('is one Regional REST API deployed to the prod stage without tracing', () => {
      template.resourceCountIs('AWS::ApiGateway::RestApi', 1);
      template.hasResourceProperties('AWS::ApiGateway::RestApi', {
        EndpointConfiguration: { Types: ['REGIONAL'] },
      });
      template.hasResourceProperties('AWS::ApiGateway::Stage', { StageName: 'prod', TracingEnabled: false });
    });

    it('creates one API key, named "default", whose value CloudFormation generates', () => {
      template.resourceCountIs('AWS::ApiGateway::ApiKey', 1);
      template.hasResourceProperties('AWS::ApiGateway::ApiKey', {
        Name: 'ChatProxy-default',
        Enabled: true,
        Value: Match.absent(),
      });
    });

    it('limits every key through one usage plan on the deployed stage', () => {
      template.resourceCountIs('AWS::ApiGateway::UsagePlan', 1);
      template.hasResourceProperties('AWS::ApiGateway::UsagePlan', {
        Throttle: { RateLimit: 10, BurstLimit: 20 },
        Quota: { Limit: 10_000, Period: 'DAY' },
        ApiStages: [Match.objectLike({ ApiId: Match.anyValue(), Stage: Match.anyValue() })],
      });
      template.resourceCountIs('AWS::ApiGateway::UsagePlanKey', 1);
    });

    it.each([
      { type: 'INVALID_API_KEY', status: '403', code: 'forbidden' },
      { type: 'MISSING_AUTHENTICATION_TOKEN', status: '403', code: 'forbidden' },
      { type: 'THROTTLED', status: '429', code: 'rate_limited' },
      { type: 'QUOTA_EXCEEDED', status: '429', code: 'rate_limited' },
      { type: 'REQUEST_TOO_LARGE', status: '413', code: 'payload_too_large' },
      { type: 'BAD_REQUEST_BODY', status: '400', code: 'invalid_body' },
      { type: 'WAF_FILTERED', status: '403', code: 'forbidden' },
      { type: 'DEFAULT_4XX', status: undefined, code: 'bad_request' },
      { type: 'DEFAULT_5XX', status: undefined, code: 'gateway_error' },
    ])('answers $type with $status and a JSON error coded $code', ({ type, status, code }) => {
      const responses = template.findResources('AWS::ApiGateway::GatewayResponse', {
        Properties: { ResponseType: type },
      });
      const [response] = Object.values(responses);

      expect(Object.keys(responses)).toHaveLength(1);
      expect(response?.Properties.StatusCode).toBe(status);
      expect(response?.Properties.ResponseParameters).toEqual({
        'gatewayresponse.header.Content-Type': "'application/json'",
      });
      // API Gateway renders $context.error.messageString as a quoted JSON string, and
      // validationErrorString JSON-escaped but unquoted.
      const body = String(response?.Properties.ResponseTemplates['application/json'])
        .replace('$context.error.messageString', '"API Gateway message"')
        .replace('$context.error.validationErrorString', SAMPLE_VALIDATION_ERROR);
      expect(JSON.parse(body)).toEqual({ error: { code, message: expect.any(String) } });
    });
  });

  describe('outputs', () => {
    it('outputs the API URL, both secret ARNs, and the API key id with the command that reads its value', () => {
      const outputs = Object.keys(template.findOutputs('*'));

      expect(outputs.sort()).toEqual(
        [
          'ApiKeyIdDefault',
          'ApiKeyValueCommandDefault',
          'ApiUrl',
          'DashboardUrl',
          'OpenAiSecretArn',
          'RedisSecretArn',
        ].sort(),
      );
      template.hasOutput('ApiKeyValueCommandDefault', {
        Value: {
          'Fn::Join': [
            '',
            [
              'aws apigateway get-api-key --api-key ',
              { Ref: Match.anyValue() },
              ' --include-value --query value --output text --region us-east-1',
            ],
          ],
        },
      });
    });
  });
});

describe('ChatProxyStack with context overrides', () => {
  const openAiSecretArn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:chat-proxy/openai-AbC123';
  const redisSecretArn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:chat-proxy/redis-XyZ789';
  const { template } = synthesize({
    openAiModel: 'gpt-5-mini',
    openAiModerationModel: 'omni-moderation-2024-09-26',
    openAiSecretArn,
    redisSecretArn,
    stageName: 'v1',
    apiKeys: ['tenant-a', 'tenant-b'],
    throttleRateLimit: 5,
    throttleBurstLimit: 8,
    quotaLimit: 500,
    quotaPeriod: 'WEEK',
  });
  const byRoute = resourcesByRoute(template);

  it('passes the model to every function and the moderation model to those that call OpenAI', () => {
    for (const { route, environment } of byRoute.values()) {
      const callsOpenAi = route.needs.includes('openai');

      expect(environment.OPENAI_MODEL, route.id).toBe('gpt-5-mini');
      expect(environment.OPENAI_MODERATION_MODEL, route.id).toBe(
        callsOpenAi ? 'omni-moderation-2024-09-26' : undefined,
      );
    }
  });

  it('imports the given secrets instead of creating any', () => {
    template.resourceCountIs('AWS::SecretsManager::Secret', 0);
    template.hasOutput('OpenAiSecretArn', { Value: openAiSecretArn });
    template.hasOutput('RedisSecretArn', { Value: redisSecretArn });
  });

  it.each(routes)('lets the $id function read exactly the imported ARNs its route needs', (route) => {
    const expected = [
      ...(route.needs.includes('openai') ? [openAiSecretArn] : []),
      ...(route.needs.includes('redis') ? [redisSecretArn] : []),
    ];

    const resources = byRoute.get(route.id);

    expect([...(resources?.readableSecrets ?? [])].sort()).toEqual(expected.sort());
    expect(resources?.environment.OPENAI_SECRET_ARN).toBe(
      route.needs.includes('openai') ? openAiSecretArn : undefined,
    );
    expect(resources?.environment.REDIS_SECRET_ARN).toBe(
      route.needs.includes('redis') ? redisSecretArn : undefined,
    );
  });

  it('creates one API key per name, each in the usage plan, with its outputs', () => {
    template.resourceCountIs('AWS::ApiGateway::ApiKey', 2);
    template.resourceCountIs('AWS::ApiGateway::UsagePlanKey', 2);
    for (const name of ['tenant-a', 'tenant-b']) {
      template.hasResourceProperties('AWS::ApiGateway::ApiKey', { Name: `ChatProxy-${name}` });
    }
    for (const output of ['ApiKeyIdTenanta', 'ApiKeyIdTenantb', 'ApiKeyValueCommandTenanta']) {
      template.hasOutput(output, {});
    }
  });

  it('applies the throttle, quota and stage name', () => {
    template.hasResourceProperties('AWS::ApiGateway::UsagePlan', {
      Throttle: { RateLimit: 5, BurstLimit: 8 },
      Quota: { Limit: 500, Period: 'WEEK' },
    });
    template.hasResourceProperties('AWS::ApiGateway::Stage', { StageName: 'v1' });
  });
});

describe('ChatProxyStack with chat settings', () => {
  const { template } = synthesize({
    openAiModels: ['gpt-4o-mini'],
    maxContextTokens: 16_000,
    chatTtlDays: 30,
    openAiTemperature: 0.3,
    openAiMaxTokens: 800,
  });
  const byRoute = resourcesByRoute(template);

  it('gives every function the same chat settings, so they agree on models and budgets', () => {
    for (const { route, environment } of byRoute.values()) {
      expect(environment, route.id).toMatchObject({
        OPENAI_MODELS: 'gpt-4o-mini',
        MAX_CONTEXT_TOKENS: '16000',
        CHAT_TTL_DAYS: '30',
        OPENAI_TEMPERATURE: '0.3',
        OPENAI_MAX_TOKENS: '800',
      });
    }
  });
});

describe('ChatProxyStack with an external Redis Cluster', () => {
  const byRoute = resourcesByRoute(synthesize({ redisCluster: true }).template);

  it('tells the functions that use Redis to use a cluster client', () => {
    for (const { route, environment } of byRoute.values()) {
      expect(environment.REDIS_CLUSTER, route.id).toBe(route.needs.includes('redis') ? 'true' : undefined);
    }
  });
});
