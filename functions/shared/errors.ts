/**
 * Every error a client can see is one of these classes, with a stable `code`. The HTTP status of
 * each lives here and only here; `http.ts` turns any of them into `{"error":{"code","message"}}`.
 */

export abstract class ChatProxyError extends Error {
  abstract readonly status: number;
  /** Extra response headers, e.g. `Retry-After`. */
  get headers(): Readonly<Record<string, string>> {
    return {};
  }

  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** 400: the request itself is wrong (JSON, fields, chat id). */
export class ValidationError extends ChatProxyError {
  readonly status = 400;
}

/** 403: no API key, or one this deployment does not know. */
export class ForbiddenError extends ChatProxyError {
  readonly status = 403;
  constructor(message = 'Forbidden: a valid x-api-key header is required') {
    super('forbidden', message);
  }
}

/** 404: no such route. */
export class NotFoundError extends ChatProxyError {
  readonly status = 404;
  constructor(message = 'Not found') {
    super('not_found', message);
  }
}

/** 405: the path exists, the method does not. */
export class MethodNotAllowedError extends ChatProxyError {
  readonly status = 405;
  constructor(
    message: string,
    readonly allow: readonly string[],
  ) {
    super('method_not_allowed', message);
  }
  override get headers(): Record<string, string> {
    return { Allow: this.allow.join(', ') };
  }
}

/** 413: the body is over the configured limit. */
export class PayloadTooLargeError extends ChatProxyError {
  readonly status = 413;
  constructor(limitBytes: number) {
    super('payload_too_large', `Request body is larger than the limit of ${limitBytes} bytes`);
  }
}

/** 429: OpenAI rate-limited us; `Retry-After` is passed on when OpenAI gave one. */
export class UpstreamRateLimitedError extends ChatProxyError {
  readonly status = 429;
  constructor(
    message: string,
    readonly retryAfterSeconds: string | undefined,
    options?: { cause?: unknown },
  ) {
    super('upstream_rate_limited', message, options);
  }
  override get headers(): Record<string, string> {
    return this.retryAfterSeconds === undefined ? {} : { 'Retry-After': this.retryAfterSeconds };
  }
}

/** 400 from OpenAI for something the client sent (e.g. an image URL OpenAI cannot download). */
export class UpstreamRejectedError extends ChatProxyError {
  readonly status = 400;
  constructor(message: string, options?: { cause?: unknown }) {
    super('upstream_rejected', message, options);
  }
}

/** 502: OpenAI failed, refused our credentials, or answered something unusable. */
export class UpstreamError extends ChatProxyError {
  readonly status = 502;
}

/** 504: OpenAI did not answer within the configured timeout. */
export class UpstreamTimeoutError extends ChatProxyError {
  readonly status = 504;
  constructor(message = 'OpenAI did not answer in time', options?: { cause?: unknown }) {
    super('upstream_timeout', message, options);
  }
}

/** 503: Redis cannot be reached (or is not configured). */
export class StorageUnavailableError extends ChatProxyError {
  readonly status = 503;
  constructor(message = 'Chat storage is unavailable, try again shortly', options?: { cause?: unknown }) {
    super('storage_unavailable', message, options);
  }
}

/** 503: Secrets Manager cannot be reached, or a secret is missing. */
export class SecretsUnavailableError extends ChatProxyError {
  readonly status = 503;
  constructor(
    message = 'Service credentials are unavailable, try again shortly',
    options?: { cause?: unknown },
  ) {
    super('secrets_unavailable', message, options);
  }
}

/** 409: another turn is running on this chat (and the request did not ask to wait). */
export class ChatBusyError extends ChatProxyError {
  readonly status = 409;
  constructor(message = 'Another turn is running on this chat; retry, or send "wait_ms" to wait for it') {
    super('chat_busy', message);
  }
}

/**
 * 409: the turn outlived its lease or the chat was cleared while it ran, so it was not stored
 * (another turn may hold the chat now; storing it would scramble the history).
 */
export class TurnNotStoredError extends ChatProxyError {
  readonly status = 409;
}

/** 409: a request with this Idempotency-Key is still running. */
export class RequestInProgressError extends ChatProxyError {
  readonly status = 409;
  constructor() {
    super('request_in_progress', 'A request with this Idempotency-Key is still running; retry later');
  }
}

/** 422: an Idempotency-Key reused with a different body. */
export class IdempotencyKeyReusedError extends ChatProxyError {
  readonly status = 422;
  constructor() {
    super('idempotency_key_reused', 'This Idempotency-Key was used with a different request body');
  }
}

/** 404: the chat has never been written (or was deleted, or expired). */
export class ChatNotFoundError extends ChatProxyError {
  readonly status = 404;
  constructor() {
    super('chat_not_found', 'No chat with this id');
  }
}

/** 500: a bug. The client sees no detail; the log has the error. */
export class InternalError extends ChatProxyError {
  readonly status = 500;
  constructor() {
    super('internal_error', 'Internal error');
  }
}
