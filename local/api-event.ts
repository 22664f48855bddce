import { randomUUID } from 'node:crypto';
import type { APIGatewayProxyEvent } from 'aws-lambda';

export interface ApiEventInput {
  readonly method: string;
  /** The route's path template, e.g. `/{chat_id}/chat`. */
  readonly resource: string;
  /** The concrete path, e.g. `/my-chat/chat`. */
  readonly path: string;
  readonly pathParameters?: Record<string, string> | null;
  readonly queryStringParameters?: Record<string, string> | null;
  readonly headers?: Record<string, string>;
  readonly body?: string | null;
  readonly isBase64Encoded?: boolean;
  /** The id of the API key that API Gateway accepted: the tenant. */
  readonly apiKeyId?: string | null;
  readonly sourceIp?: string;
}

/**
 * An API Gateway REST proxy event as API Gateway builds it, so the local server and the tests call
 * the handlers with exactly what they receive when deployed.
 */
export function apiGatewayEvent(input: ApiEventInput): APIGatewayProxyEvent {
  const headers = input.headers ?? {};
  const now = new Date();
  return {
    resource: input.resource,
    path: input.path,
    httpMethod: input.method,
    headers,
    multiValueHeaders: Object.fromEntries(Object.entries(headers).map(([name, value]) => [name, [value]])),
    queryStringParameters: input.queryStringParameters ?? null,
    multiValueQueryStringParameters: input.queryStringParameters
      ? Object.fromEntries(
          Object.entries(input.queryStringParameters).map(([name, value]) => [name, [value]]),
        )
      : null,
    pathParameters: input.pathParameters ?? null,
    stageVariables: null,
    body: input.body ?? null,
    isBase64Encoded: input.isBase64Encoded ?? false,
    requestContext: {
      accountId: '000000000000',
      apiId: 'local',
      authorizer: null,
      protocol: 'HTTP/1.1',
      httpMethod: input.method,
      path: `/local${input.path}`,
      stage: 'local',
      requestId: randomUUID(),
      requestTimeEpoch: now.getTime(),
      resourceId: 'local',
      resourcePath: input.resource,
      identity: {
        accessKey: null,
        accountId: null,
        apiKey: null,
        apiKeyId: input.apiKeyId ?? null,
        caller: null,
        clientCert: null,
        cognitoAuthenticationProvider: null,
        cognitoAuthenticationType: null,
        cognitoIdentityId: null,
        cognitoIdentityPoolId: null,
        principalOrgId: null,
        sourceIp: input.sourceIp ?? '127.0.0.1',
        user: null,
        userAgent: headers['user-agent'] ?? null,
        userArn: null,
      },
    },
  };
}
