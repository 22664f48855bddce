import type { APIGatewayProxyResult } from 'aws-lambda';

/** `GET /`: the health check. Imports nothing, so it starts in a few milliseconds. */
export const handler = async (): Promise<APIGatewayProxyResult> => ({
  statusCode: 200,
  headers: { 'Content-Type': 'text/html; charset=utf-8' },
  body: 'Hello, World!',
});
