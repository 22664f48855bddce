import { App, Duration, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { Code, Function as LambdaFunction, Runtime } from 'aws-cdk-lib/aws-lambda';
import { describe, it } from 'vitest';
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
