import { App, Duration, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { Code, Function as LambdaFunction, Runtime } from 'aws-cdk-lib/aws-lambda';
import { describe, expect, it } from 'vitest';
import type { RouteDefinition } from '../../functions/routes';
import { ChatProxyApi } from '../../infra/constructs/api';
import { featureFlags } from './synth';

const route: RouteDefinition = {
  id: 'PostChat',
  method: 'POST',
  path: '/{chat_id}/chat',
  entry: 'post-chat',
  response: 'turn',
  apiKeyRequired: true,
  needs: [],
  summary: 'A streamed chat turn',
};

describe('ChatProxyApi.addRoute', () => {
  it('streams the response of a route added with responseStreaming, up to its timeout', () => {
    const stack = new Stack(new App({ context: featureFlags }), 'Test');
    const api = new ChatProxyApi(stack, 'Api');
    const handler = new LambdaFunction(stack, 'Handler', {
      runtime: Runtime.NODEJS_22_X,
      handler: 'index.handler',
      code: Code.fromInline('exports.handler = async () => {}'),
    });

    api.addRoute(route, handler, { responseStreaming: true, timeout: Duration.minutes(5) });

    Template.fromStack(stack).hasResourceProperties('AWS::ApiGateway::Method', {
      HttpMethod: 'POST',
      Integration: Match.objectLike({
        Type: 'AWS_PROXY',
        ResponseTransferMode: 'STREAM',
        TimeoutInMillis: 300_000,
        Uri: {
          'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp('/response-streaming-invocations$')])],
        },
      }),
    });
  });

  it('buffers the response by default', () => {
    const stack = new Stack(new App({ context: featureFlags }), 'Test');
    const api = new ChatProxyApi(stack, 'Api');
    const handler = new LambdaFunction(stack, 'Handler', {
      runtime: Runtime.NODEJS_22_X,
      handler: 'index.handler',
      code: Code.fromInline('exports.handler = async () => {}'),
    });

    api.addRoute(route, handler);

    Template.fromStack(stack).hasResourceProperties('AWS::ApiGateway::Method', {
      Integration: Match.objectLike({
        ResponseTransferMode: Match.absent(),
        Uri: { 'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp('/invocations$')])] },
      }),
    });
  });
});

describe('ChatProxyApi request bodies', () => {
  const bodySchemas = {
    content: { type: 'object', required: ['content'], properties: { content: { type: 'string' } } },
  } as const;
  const contentRoute = (id: string, path: string): RouteDefinition => ({
    ...route,
    id,
    path,
    body: 'content',
  });

  function apiWith(routes: readonly RouteDefinition[], schemas = bodySchemas) {
    const stack = new Stack(new App({ context: featureFlags }), 'Test');
    const api = new ChatProxyApi(stack, 'Api', { bodySchemas: schemas });
    const handler = new LambdaFunction(stack, 'Handler', {
      runtime: Runtime.NODEJS_22_X,
      handler: 'index.handler',
      code: Code.fromInline('exports.handler = async () => {}'),
    });
    for (const each of routes) api.addRoute(each, handler);
    return Template.fromStack(stack);
  }

  it('validates the body of a route that names one against its model, one model per body', () => {
    const template = apiWith([contentRoute('PostSystem', '/system'), contentRoute('PostMod', '/mod')]);

    template.resourceCountIs('AWS::ApiGateway::Model', 1);
    template.hasResourceProperties('AWS::ApiGateway::Model', {
      Name: 'ContentBody',
      ContentType: 'application/json',
      Schema: Match.objectLike({ $schema: 'http://json-schema.org/draft-04/schema#', required: ['content'] }),
    });
    template.resourceCountIs('AWS::ApiGateway::RequestValidator', 1);
    template.hasResourceProperties('AWS::ApiGateway::RequestValidator', { ValidateRequestBody: true });
    template.allResourcesProperties('AWS::ApiGateway::Method', {
      RequestModels: { 'application/json': { Ref: Match.stringLikeRegexp('ContentBody') } },
      RequestValidatorId: { Ref: Match.stringLikeRegexp('BodyValidator') },
    });
  });

  it('leaves a route without a body unvalidated', () => {
    const template = apiWith([{ ...route, method: 'GET', path: '/{chat_id}/chat' }]);

    template.resourceCountIs('AWS::ApiGateway::Model', 0);
    template.resourceCountIs('AWS::ApiGateway::RequestValidator', 0);
    template.hasResourceProperties('AWS::ApiGateway::Method', {
      RequestModels: Match.absent(),
      RequestValidatorId: Match.absent(),
    });
  });

  it('refuses a route whose body has no schema', () => {
    expect(() => apiWith([{ ...route, body: 'chat' }])).toThrow('A route takes the "chat" body');
  });
});
