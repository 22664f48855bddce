import {
  type JsonSchema as ApiGatewaySchema,
  JsonSchemaType,
  JsonSchemaVersion,
} from 'aws-cdk-lib/aws-apigateway';
import type { JsonSchema, ObjectSchema } from '../functions/shared/validation';

/**
 * Matches what the handlers accept as `format: 'uri'`: API Gateway's draft-04 models ignore
 * `format`, and its ECMA 262 patterns take no flags, so the case-insensitive scheme is spelled out.
 */
export const HTTP_URL_PATTERN = '^[Hh][Tt][Tt][Pp][Ss]?://';

/**
 * Converts a request body schema of `functions/shared/schemas.ts` into an API Gateway model
 * (JSON Schema draft-04). The model is never stricter than the handler's own check, so the gateway
 * only turns away bodies the handler would refuse anyway:
 * - an optional field may be `null`, which the handler treats as absent;
 * - `integer` becomes a number that is a multiple of 1, because the handler accepts `1.0`, which
 *   draft-04 does not count as an integer;
 * - lengths are looser than the handler's (it trims before `minLength` and counts UTF-16 units).
 */
export function apiGatewayModelSchema(schema: ObjectSchema, title?: string): ApiGatewaySchema {
  return { schema: JsonSchemaVersion.DRAFT4, ...(title ? { title } : {}), ...convert(schema, true) };
}

function convert(schema: JsonSchema, required: boolean): ApiGatewaySchema {
  const orNull = !required || schema.nullable === true;
  const types = (type: JsonSchemaType): JsonSchemaType | JsonSchemaType[] =>
    orNull ? [type, JsonSchemaType.NULL] : type;
  const description = schema.description === undefined ? {} : { description: schema.description };

  switch (schema.type) {
    case 'object':
      return {
        type: types(JsonSchemaType.OBJECT),
        ...description,
        ...(schema.required?.length ? { required: [...schema.required] } : {}),
        properties: Object.fromEntries(
          Object.entries(schema.properties).map(([name, property]) => [
            name,
            convert(property, schema.required?.includes(name) ?? false),
          ]),
        ),
        ...(schema.additionalProperties === false ? { additionalProperties: false } : {}),
      };
    case 'string':
      return {
        type: types(JsonSchemaType.STRING),
        ...description,
        ...(schema.minLength === undefined ? {} : { minLength: schema.minLength }),
        ...(schema.maxLength === undefined ? {} : { maxLength: schema.maxLength }),
        ...(schema.format === 'uri' ? { pattern: HTTP_URL_PATTERN } : {}),
        // draft-04 applies enum to every type, so an enum of a nullable field must list null too.
        ...(schema.enum ? { enum: orNull ? [...schema.enum, null] : [...schema.enum] } : {}),
      };
    case 'boolean':
      return { type: types(JsonSchemaType.BOOLEAN), ...description };
    case 'integer':
    case 'number':
      return {
        type: types(JsonSchemaType.NUMBER),
        ...description,
        ...(schema.type === 'integer' ? { multipleOf: 1 } : {}),
        minimum: schema.minimum,
        maximum: schema.maximum,
      };
  }
}
