import { type Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** One HTTP exchange with an AWS endpoint, for the calls the functions make without the SDK. */

export interface HttpResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export interface HttpRequestOptions {
  readonly method: 'GET' | 'POST';
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
  /** An `http.Agent` for `http:` URLs, an `https.Agent` for `https:` ones. */
  readonly agent?: Agent;
  /** Longest wait for a new connection (TCP and TLS); a reused keep-alive connection skips it. */
  readonly connectTimeoutMs: number;
  /** Longest wait for the whole response, from the start of the request. */
  readonly timeoutMs: number;
}

/** A response larger than this is not what any of these endpoints sends. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

/** The request did not finish in time; always worth one more attempt. */
export class HttpTimeoutError extends Error {
  override readonly name = 'HttpTimeoutError';
}

/**
 * Sends one request and reads the whole response. Any network failure or timeout rejects (the
 * caller decides about retrying); any HTTP status resolves.
 */
export function sendRequest(url: URL, options: HttpRequestOptions): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const timers: NodeJS.Timeout[] = [];
    const done = () => {
      for (const timer of timers) clearTimeout(timer);
    };
    const headers = { ...options.headers };
    if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body));

    const req = send(url, { method: options.method, headers, agent: options.agent }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES)
          req.destroy(new Error(`Response larger than ${MAX_RESPONSE_BYTES} bytes`));
        else chunks.push(chunk);
      });
      res.on('end', () => {
        done();
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        });
      });
      res.on('error', (error) => {
        done();
        reject(error);
      });
      res.on('close', () => {
        done();
        if (!res.complete) reject(new Error('The connection closed before the response was complete'));
      });
    });
    req.on('error', (error) => {
      done();
      reject(error);
    });
    req.on('socket', (socket) => {
      if (!socket.connecting) return;
      const connected = url.protocol === 'https:' ? 'secureConnect' : 'connect';
      const timer = setTimeout(
        () => req.destroy(new HttpTimeoutError(`No connection within ${options.connectTimeoutMs} ms`)),
        options.connectTimeoutMs,
      );
      timers.push(timer);
      socket.once(connected, () => clearTimeout(timer));
    });
    timers.push(
      setTimeout(
        () => req.destroy(new HttpTimeoutError(`No complete response within ${options.timeoutMs} ms`)),
        options.timeoutMs,
      ),
    );
    req.end(options.body);
  });
}
