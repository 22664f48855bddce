import { readFileSync } from 'node:fs';
import { Validator } from '@seriousme/openapi-schema-validator';
import { describe, expect, it } from 'vitest';
import { routes } from '../../functions/routes';
import { defaultOpenApiDocument } from '../../local/write-openapi';
import { apiEvent } from '../support/events';
import { loadHandler } from '../support/handlers';

type Document = { paths: Record<string, Record<string, { security: unknown[]; requestBody?: unknown }>> };
const document = defaultOpenApiDocument() as Document;

describe('the OpenAPI document', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const result = await new Validator().validate(document as unknown as Record<string, unknown>);

    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it('has every route of the route table, with its API key need and body', () => {
    const documented = Object.entries(document.paths).flatMap(([path, methods]) =>
      Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`),
    );

    expect(documented.sort()).toEqual(routes.map((route) => `${route.method} ${route.path}`).sort());
    for (const route of routes) {
      const operation = document.paths[route.path]?.[route.method.toLowerCase()];
      expect(operation?.security, route.id).toEqual(route.apiKeyRequired ? [{ apiKey: [] }] : []);
      expect(operation?.requestBody !== undefined, route.id).toBe(route.body !== undefined);
    }
  });

  it('is what the committed openapi.json holds (run npm run openapi after changing the API)', () => {
    const committed = JSON.parse(readFileSync(new URL('../../openapi.json', import.meta.url), 'utf8'));

    expect(committed).toEqual(document);
  });

  it('is served at GET /openapi.json without an API key', async () => {
    const getOpenApi = await loadHandler('get-openapi');

    const result = await getOpenApi(
      apiEvent({ resource: '/openapi.json', path: '/openapi.json', apiKeyId: null }),
    );

    expect(result.statusCode).toBe(200);
    expect(JSON.parse(result.body)).toEqual(document);
  });
});
