import { Writable } from 'node:stream';
import type {
  AwsLambdaGlobal,
  ResponsePrelude,
  ResponseStream,
  StreamingHandler,
} from '../functions/shared/lambda-stream';

/**
 * A stand-in for the `awslambda` global of the Node.js Lambda runtime, with the runtime's wire
 * behaviour: `streamifyResponse` marks the handler, and `HttpResponseStream.from` writes the JSON
 * prelude (status, headers) and eight NUL bytes before the body, which is what API Gateway reads.
 * The local server and the tests use it, so streaming handlers run unchanged outside AWS.
 */

const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const PRELUDE_CONTENT_TYPE = 'application/vnd.awslambda.http-integration-response';
const DELIMITER = Buffer.alloc(8);

export const awsLambdaStandIn: AwsLambdaGlobal = {
  streamifyResponse(handler) {
    Object.defineProperty(handler, STREAMING, { value: 'response' });
    return handler;
  },
  HttpResponseStream: {
    from(stream, prelude) {
      stream.setContentType?.(PRELUDE_CONTENT_TYPE);
      stream.write(JSON.stringify(prelude));
      stream.write(DELIMITER);
      return stream;
    },
  },
};

/**
 * Installs the stand-in on `globalThis.awslambda` unless a real runtime already provides it. The
 * object may already exist without them: the AWS SDK puts its invoke store there.
 */
export function installAwsLambda(): void {
  const global = globalThis as unknown as { awslambda?: Partial<AwsLambdaGlobal> };
  if (typeof global.awslambda?.streamifyResponse === 'function') return;
  global.awslambda = Object.assign(global.awslambda ?? {}, awsLambdaStandIn);
}

/** Whether a handler was wrapped by `streamifyResponse`. */
export function isStreamingHandler(handler: unknown): handler is StreamingHandler {
  return (
    typeof handler === 'function' && (handler as unknown as Record<symbol, unknown>)[STREAMING] === 'response'
  );
}

/** Where a parsed streaming response goes: the status and headers once, then body chunks. */
export interface ResponseTarget {
  head(prelude: ResponsePrelude): void;
  write(chunk: Buffer): void;
  end(): void;
}

/**
 * The response stream a streaming handler writes to, as the runtime gives it, parsing what the
 * handler writes the way API Gateway does: the prelude up to the delimiter, then the body.
 *
 * A class, its behaviour in prototype methods rather than in closures made for each stream.
 * Written with closures (a `write` option, `setContentType` assigned on each stream), a bench turn
 * through it promoted about 2.9 KB to V8's old generation (the stream, its target and what they
 * reached survived two young-generation collections, though nothing used them once the turn was
 * over); as a class, 0.2 KB, as much as a direct call. That garbage brought on full collections
 * in the bench process every second or so, and the recompiles after them (bench/ANALYSIS.md).
 */
class ParsedResponseStream extends Writable {
  /** What has come before the delimiter; undefined once the prelude has been read. */
  private pending: Buffer | undefined = EMPTY;
  private contentType = 'application/octet-stream';

  constructor(private readonly target: ResponseTarget) {
    super();
  }

  setContentType(type: string): void {
    this.contentType = type;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.deliver(chunk);
    callback();
  }

  private deliver(chunk: Buffer): void {
    const { target } = this;
    if (this.pending === undefined) {
      target.write(chunk);
      return;
    }
    if (this.contentType !== PRELUDE_CONTENT_TYPE) {
      // A handler that never called HttpResponseStream.from: a plain 200 body, as in Lambda.
      this.pending = undefined;
      target.head({ statusCode: 200, headers: { 'content-type': this.contentType } });
      target.write(chunk);
      return;
    }
    const pending = Buffer.concat([this.pending, chunk]);
    const end = pending.indexOf(DELIMITER);
    if (end === -1) {
      this.pending = pending;
      return;
    }
    const prelude = JSON.parse(pending.subarray(0, end).toString('utf8')) as ResponsePrelude;
    const rest = pending.subarray(end + DELIMITER.length);
    this.pending = undefined;
    target.head(prelude);
    if (rest.length > 0) target.write(rest);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.pending !== undefined) this.target.head({ statusCode: 200, headers: {} });
    this.target.end();
    callback();
  }
}

const EMPTY = Buffer.alloc(0);

/** The response stream a streaming handler writes to, reporting to `target` (see ParsedResponseStream). */
export function createResponseStream(target: ResponseTarget): ResponseStream {
  return new ParsedResponseStream(target);
}
