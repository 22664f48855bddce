import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { routes } from '../../functions/routes';
import { COUNT_ONLY_BODY_RULES } from '../../infra/constructs/api';
import { resourcesByRoute, SAMPLE_VALIDATION_ERROR, synthesize } from './synth';

type Template = ReturnType<typeof synthesize>['template'];

function onlyResource(template: Template, type: string): Record<string, unknown> {
  const found = Object.values(template.findResources(type));
  expect(found, type).toHaveLength(1);
  return (found[0] as { Properties: Record<string, unknown> }).Properties;
}

describe('API Gateway guard rails, by default', () => {
  const { template } = synthesize();
  const byRoute = resourcesByRoute(template);

  describe('logging', () => {
    it('writes one JSON access log line per request, with the key id and never the key', () => {
      const stage = onlyResource(template, 'AWS::ApiGateway::Stage');
      const format = String((stage.AccessLogSetting as { Format: string }).Format);
      // What API Gateway writes: every variable substituted, messageString already quoted.
      const line = format
        .replace('$context.error.messageString', '"Invalid request body"')
        .replace(/\$context\.[A-Za-z.]+/g, '-');

      const fields = JSON.parse(line) as Record<string, unknown>;

      expect(Object.keys(fields)).toEqual(
        expect.arrayContaining([
          'requestId',
          'ip',
          'apiKeyId',
          'method',
          'path',
          'status',
          'latency',
          'integrationLatency',
          'responseLength',
          'error',
        ]),
      );
      expect(format).toContain('"apiKeyId":"$context.identity.apiKeyId"');
      expect(format).not.toContain('$context.identity.apiKey"');
      expect(format).not.toMatch(/validationErrorString|requestOverride|\$input/);
    });

    it('keeps the access log for one month in its own log group', () => {
      const stage = onlyResource(template, 'AWS::ApiGateway::Stage');
      const destination = JSON.stringify(
        (stage.AccessLogSetting as { DestinationArn: unknown }).DestinationArn,
      );
      const [logGroupId] = /"Ref":"(ApiAccessLogs[A-Za-z0-9]+)"/.exec(destination)?.slice(1) ?? [];

      expect(template.toJSON().Resources[logGroupId ?? '']).toMatchObject({
        Type: 'AWS::Logs::LogGroup',
        Properties: { RetentionInDays: 30 },
      });
    });

    it('logs execution errors of every method, without request or response bodies', () => {
      template.hasResourceProperties('AWS::ApiGateway::Stage', {
        MethodSettings: [
          Match.objectLike({
            HttpMethod: '*',
            ResourcePath: '/*',
            LoggingLevel: 'ERROR',
            DataTraceEnabled: false,
          }),
        ],
      });
    });

    it("sets the account's API Gateway CloudWatch role, and keeps it when the stack goes", () => {
      template.resourceCountIs('AWS::ApiGateway::Account', 1);
      const [role] = Object.values(
        template.findResources('AWS::IAM::Role', {
          Properties: {
            AssumeRolePolicyDocument: Match.objectLike({
              Statement: [Match.objectLike({ Principal: { Service: 'apigateway.amazonaws.com' } })],
            }),
          },
        }),
      );

      expect(role).toMatchObject({ DeletionPolicy: 'Retain' });
    });
  });

  describe('request validation', () => {
    it.each(routes)('validates the body of $method $path exactly when the route table names one', (route) => {
      const method = Object.values(template.findResources('AWS::ApiGateway::Method')).find(
        (resource) =>
          resource.Properties.HttpMethod === route.method &&
          JSON.stringify(resource.Properties.Integration.Uri).includes(
            byRoute.get(route.id)?.functionId ?? '?',
          ),
      );

      if (route.body === undefined) {
        expect(method?.Properties.RequestModels).toBeUndefined();
        expect(method?.Properties.RequestValidatorId).toBeUndefined();
      } else {
        expect(method?.Properties.RequestModels).toEqual({
          'application/json': {
            Ref: expect.stringMatching(new RegExp(`RestApi${capitalized(route.body)}Body`)),
          },
        });
        expect(method?.Properties.RequestValidatorId).toEqual({
          Ref: expect.stringMatching(/BodyValidator/),
        });
      }
    });

    it('validates request bodies of streaming routes too, as validation happens before the integration', () => {
      const streamed = [...byRoute.values()].filter(({ route }) => route.streaming);

      expect(streamed.length).toBeGreaterThan(0);
      for (const { route, integration } of streamed) {
        expect(route.body, route.id).toBeDefined();
        expect(integration.ResponseTransferMode).toBe('STREAM');
      }
    });

    it('has one model per body the route table names, from the schemas the handlers use', () => {
      const bodies = new Set(routes.flatMap((route) => (route.body ? [route.body] : [])));

      template.resourceCountIs('AWS::ApiGateway::Model', bodies.size);
      template.hasResourceProperties('AWS::ApiGateway::Model', {
        Name: 'ChatBody',
        Schema: Match.objectLike({
          required: ['content'],
          properties: Match.objectLike({
            content: Match.objectLike({ type: 'string', minLength: 1, maxLength: 100_000 }),
            wait_ms: {
              type: ['number', 'null'],
              multipleOf: 1,
              minimum: 0,
              maximum: 30_000,
              description: Match.anyValue(),
            },
          }),
        }),
      });
      template.hasResourceProperties('AWS::ApiGateway::Model', {
        Name: 'ImageBody',
        Schema: Match.objectLike({
          required: ['content', 'url'],
          properties: Match.objectLike({ url: Match.objectLike({ pattern: '^[Hh][Tt][Tt][Pp][Ss]?://' }) }),
        }),
      });
    });
  });

  it('answers a body that fails its model with 400 invalid_body and the reason, as JSON', () => {
    const [response] = Object.values(
      template.findResources('AWS::ApiGateway::GatewayResponse', {
        Properties: { ResponseType: 'BAD_REQUEST_BODY' },
      }),
    );
    const body = String(response?.Properties.ResponseTemplates['application/json']).replace(
      '$context.error.validationErrorString',
      SAMPLE_VALIDATION_ERROR,
    );

    expect(response?.Properties.StatusCode).toBe('400');
    expect(JSON.parse(body)).toEqual({
      error: { code: 'invalid_body', message: '[object has missing required properties (["content"])]' },
    });
  });

  it('has no CORS preflight methods, no CORS headers and no web ACL', () => {
    expect(
      Object.keys(
        template.findResources('AWS::ApiGateway::Method', { Properties: { HttpMethod: 'OPTIONS' } }),
      ),
    ).toHaveLength(0);
    expect(JSON.stringify(template.findResources('AWS::ApiGateway::GatewayResponse'))).not.toContain(
      'Access-Control',
    );
    template.resourceCountIs('AWS::WAFv2::WebACL', 0);
  });
});

describe('API Gateway guard rails, with CORS and a web ACL', () => {
  const origins = ['https://app.example.com', 'http://localhost:5173'];
  const { template } = synthesize({ corsOrigins: origins, wafRateLimit: 1500 });
  const byRoute = resourcesByRoute(template);

  it('answers preflight requests on every resource without an API key', () => {
    const options = Object.values(
      template.findResources('AWS::ApiGateway::Method', { Properties: { HttpMethod: 'OPTIONS' } }),
    );
    const resources = new Set(routes.map((route) => route.path));

    expect(options).toHaveLength(resources.size);
    for (const method of options) {
      expect(method.Properties.ApiKeyRequired).toBe(false);
      const headers = method.Properties.Integration.IntegrationResponses[0].ResponseParameters;
      expect(headers['method.response.header.Access-Control-Allow-Headers']).toBe(
        "'Content-Type,x-api-key,Idempotency-Key,Accept'",
      );
      expect(headers['method.response.header.Access-Control-Allow-Methods']).toBe(
        "'GET,POST,DELETE,OPTIONS'",
      );
    }
  });

  it("echoes an allowed caller's Origin on API Gateway's own errors", () => {
    for (const response of Object.values(template.findResources('AWS::ApiGateway::GatewayResponse'))) {
      expect(response.Properties.ResponseParameters).toMatchObject({
        'gatewayresponse.header.Access-Control-Allow-Origin': 'method.request.header.Origin',
        'gatewayresponse.header.Vary': "'Origin'",
      });
    }
  });

  it('tells every function the allowed origins, as proxy responses carry their own headers', () => {
    for (const { route, environment } of byRoute.values()) {
      expect(environment.CORS_ALLOWED_ORIGINS, route.id).toBe(origins.join(','));
    }
  });

  it('sends a single origin as a fixed header', () => {
    const single = synthesize({ corsOrigins: 'https://app.example.com' }).template;

    for (const response of Object.values(single.findResources('AWS::ApiGateway::GatewayResponse'))) {
      expect(
        response.Properties.ResponseParameters['gatewayresponse.header.Access-Control-Allow-Origin'],
      ).toBe("'https://app.example.com'");
    }
  });

  it('blocks an IP above the rate limit and applies the AWS common rules, counting only on bodies', () => {
    const webAcl = onlyResource(template, 'AWS::WAFv2::WebACL');

    expect(webAcl).toMatchObject({ Scope: 'REGIONAL', DefaultAction: { Allow: {} } });
    expect(webAcl.Rules).toEqual([
      expect.objectContaining({
        Action: { Block: {} },
        Statement: { RateBasedStatement: { Limit: 1500, AggregateKeyType: 'IP', EvaluationWindowSec: 300 } },
      }),
      expect.objectContaining({
        OverrideAction: { None: {} },
        Statement: {
          ManagedRuleGroupStatement: {
            VendorName: 'AWS',
            Name: 'AWSManagedRulesCommonRuleSet',
            RuleActionOverrides: COUNT_ONLY_BODY_RULES.map((name) => ({
              Name: name,
              ActionToUse: { Count: {} },
            })),
          },
        },
      }),
    ]);
  });

  it('associates the web ACL with the deployed stage', () => {
    const association = onlyResource(template, 'AWS::WAFv2::WebACLAssociation');
    const stageId = Object.keys(template.findResources('AWS::ApiGateway::Stage'))[0];

    expect(JSON.stringify(association.ResourceArn)).toContain(`{"Ref":"${stageId}"}`);
    expect(association.WebACLArn).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/^ApiWebAcl/), 'Arn'] });
  });
});

function capitalized(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}
