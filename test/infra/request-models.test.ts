import { describe, expect, it } from 'vitest';
import { loadChatConfig, loadLimits } from '../../functions/shared/config';
import { requestSchemas } from '../../functions/shared/schemas';
import type { ObjectSchema } from '../../functions/shared/validation';
import { apiGatewayModelSchema, HTTP_URL_PATTERN } from '../../infra/request-models';

describe('apiGatewayModelSchema', () => {
  it('declares JSON Schema draft-04, the only version API Gateway models take', () => {
    const model = apiGatewayModelSchema({ type: 'object', properties: {} }, 'Empty');

    expect(model).toMatchObject({ schema: 'http://json-schema.org/draft-04/schema#', title: 'Empty' });
  });

  it('keeps required fields required and non-null, and lets optional fields be null as the handlers do', () => {
    const model = apiGatewayModelSchema({
      type: 'object',
      required: ['content'],
      properties: {
        content: { type: 'string', minLength: 1, maxLength: 10 },
        stream: { type: 'boolean' },
      },
    });

    expect(model).toMatchObject({
      type: 'object',
      required: ['content'],
      properties: {
        content: { type: 'string', minLength: 1, maxLength: 10 },
        stream: { type: ['boolean', 'null'] },
      },
    });
    expect(model).not.toHaveProperty('additionalProperties');
  });

  it('turns format uri into a case-insensitive http(s) pattern, since draft-04 models ignore format', () => {
    const model = apiGatewayModelSchema({
      type: 'object',
      required: ['url'],
      properties: { url: { type: 'string', format: 'uri' } },
    });
    const pattern = new RegExp(HTTP_URL_PATTERN);

    expect(model.properties?.url).toEqual({ type: 'string', pattern: HTTP_URL_PATTERN });
    expect(['https://example.com/a.png', 'HTTP://example.com'].every((url) => pattern.test(url))).toBe(true);
    expect(['ftp://example.com', 'javascript:alert(1)', ' https://x'].some((url) => pattern.test(url))).toBe(
      false,
    );
  });

  it('accepts 1.0 for an integer, as the handlers do: a number that is a multiple of 1', () => {
    const model = apiGatewayModelSchema({
      type: 'object',
      properties: { wait_ms: { type: 'integer', minimum: 0, maximum: 30_000 } },
    });

    expect(model.properties?.wait_ms).toEqual({
      type: ['number', 'null'],
      multipleOf: 1,
      minimum: 0,
      maximum: 30_000,
    });
  });

  it('lists null among the enum values of a nullable field, and refuses unknown fields when told to', () => {
    const model = apiGatewayModelSchema({
      type: 'object',
      additionalProperties: false,
      properties: {
        model: { type: 'string', enum: ['gpt-4.1-mini'], nullable: true },
        temperature: { type: 'number', minimum: 0, maximum: 2, nullable: true },
      },
    });

    expect(model).toMatchObject({
      additionalProperties: false,
      properties: {
        model: { type: ['string', 'null'], enum: ['gpt-4.1-mini', null] },
        temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
      },
    });
  });

  it.each(Object.entries(requestSchemas(loadLimits({}), loadChatConfig({}).models)))(
    'converts the %s body with the limits the handlers enforce',
    (_name, schema) => {
      const model = apiGatewayModelSchema(schema as ObjectSchema);

      expect(Object.keys(model.properties ?? {})).toEqual(Object.keys(schema.properties));
      expect(model.required ?? []).toEqual('required' in schema ? schema.required : []);
      // `nullable` is not draft-04, and draft-04 models would ignore `format` silently.
      expect(JSON.stringify(model)).not.toMatch(/"format"|"nullable"/);
    },
  );
});
