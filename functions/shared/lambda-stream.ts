import type { Writable } from 'node:stream';
import type { APIGatewayProxyEvent, Context } from 'aws-lambda';

/** The writable the Lambda runtime hands a streaming handler. */
export type ResponseStream = Writable & { setContentType?(contentType: string): void };

/** The status line and headers API Gateway sends before the streamed body. */
export interface ResponsePrelude {
  readonly statusCode: number;
  readonly headers?: Record<string, string>;
  readonly cookies?: string[];
}

export type StreamingHandler = (
  event: APIGatewayProxyEvent,
  responseStream: ResponseStream,
  context?: Context,
) => Promise<void>;

/**
 * The `awslambda` global that the Node.js Lambda runtime injects. It has no npm package; the local
 * server and the tests install a stand-in with the same wire behaviour (`local/awslambda.ts`).
 */
export interface AwsLambdaGlobal {
  streamifyResponse(handler: StreamingHandler): StreamingHandler;
  HttpResponseStream: { from(stream: ResponseStream, prelude: ResponsePrelude): ResponseStream };
}

/** The runtime's global, or a clear error where there is none (e.g. a plain `node` import). */
export function awsLambda(): AwsLambdaGlobal {
  // Read through a cast: @types/aws-lambda declares the global as a namespace, not as optional.
  const runtime = (globalThis as unknown as { awslambda?: Partial<AwsLambdaGlobal> }).awslambda;
  // The AWS SDK creates the object for its own use, so check for the function itself.
  if (typeof runtime?.streamifyResponse !== 'function' || runtime.HttpResponseStream === undefined) {
    throw new Error(
      'The awslambda global is missing: streaming handlers run in the Lambda runtime, under `npm run dev`, ' +
        'or after installing the stand-in from local/awslambda.ts',
    );
  }
  return runtime as AwsLambdaGlobal;
}
