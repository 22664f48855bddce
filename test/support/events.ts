import type { APIGatewayProxyEvent } from 'aws-lambda';
import { type ApiEventInput, apiGatewayEvent } from '../../local/api-event';

export interface TestEventInput extends Partial<ApiEventInput> {
  /** A JSON body (serialized for you); use `body` for raw text. */
  readonly json?: unknown;
  readonly chatId?: string;
}

/**
 * An API Gateway event for a handler test, with sensible defaults: tenant `tenant-a`, and the
 * path parameters filled from `chatId`. Override anything.
 */
export function apiEvent(input: TestEventInput = {}): APIGatewayProxyEvent {
  const { json, chatId, ...rest } = input;
  const resource = rest.resource ?? (chatId === undefined ? '/' : '/{chat_id}');
  return apiGatewayEvent({
    method: 'GET',
    resource,
    path: chatId === undefined ? resource : resource.replace('{chat_id}', chatId),
    apiKeyId: 'tenant-a',
    ...(chatId === undefined ? {} : { pathParameters: { chat_id: chatId } }),
    ...(json === undefined
      ? {}
      : { body: JSON.stringify(json), headers: { 'content-type': 'application/json' } }),
    ...rest,
  });
}

/** A unique id per call, so tests sharing one Redis never see each other's chats or tenants. */
let counter = 0;
export function uniqueId(prefix: string): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}
