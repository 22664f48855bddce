import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { isStreamingHandler } from '../../local/awslambda';
import { invokeStreaming, type StreamedResponse } from './lambda-stream';

export type Invoke = (
  event: APIGatewayProxyEvent,
  options?: { disconnectAfter?: number },
) => Promise<StreamedResponse>;

const context = { awsRequestId: 'test', getRemainingTimeInMillis: () => 30_000 } as Context;

/**
 * Imports a route's handler (after the test has set its environment) and returns a function that
 * invokes it as Lambda would, buffered or streaming, always answering status, headers and body.
 */
export async function loadHandler(entry: string): Promise<Invoke> {
  const { handler } = (await import(`../../functions/${entry}.ts`)) as { handler: unknown };
  return invoker(handler);
}

/** Invokes a handler (a route module's `handler` export) as Lambda would, as `loadHandler` does. */
export function invoker(handler: unknown): Invoke {
  if (isStreamingHandler(handler)) return (event, options) => invokeStreaming(handler, event, options);
  const buffered = handler as (
    event: APIGatewayProxyEvent,
    context: Context,
  ) => Promise<APIGatewayProxyResult>;
  return async (event) => {
    const result = await buffered(event, context);
    return {
      statusCode: result.statusCode,
      headers: (result.headers ?? {}) as Record<string, string>,
      body: result.body,
      events: [],
    };
  };
}
