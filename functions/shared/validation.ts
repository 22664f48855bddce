import { ValidationError } from './errors';

/**
 * A small JSON Schema subset. The request bodies are described once, as JSON Schema, so the same
 * objects can feed API Gateway request models and the OpenAPI document; this validator checks
 * them in the handlers without pulling a schema library into every bundle.
 */
export type JsonSchema =
  | {
      readonly type: 'object';
      readonly required?: readonly string[];
      readonly properties: Readonly<Record<string, JsonSchema>>;
      readonly description?: string;
    }
  | {
      readonly type: 'string';
      readonly minLength?: number;
      readonly maxLength?: number;
      /** Only `http`/`https` URLs pass. */
      readonly format?: 'uri';
      readonly description?: string;
    }
  | { readonly type: 'boolean'; readonly description?: string }
  | {
      readonly type: 'integer';
      readonly minimum: number;
      readonly maximum: number;
      readonly description?: string;
    };

type ObjectSchema = Extract<JsonSchema, { type: 'object' }>;
type RequiredKeys<S extends ObjectSchema> = S['required'] extends readonly (infer K)[]
  ? K & keyof S['properties']
  : never;

/** The parsed shape of a schema: required properties are present, the others optional. */
export type Infer<S extends JsonSchema> = S extends ObjectSchema
  ? { [K in RequiredKeys<S>]: Infer<S['properties'][K]> } & {
      [K in Exclude<keyof S['properties'], RequiredKeys<S>>]?: Infer<S['properties'][K]>;
    }
  : S extends { type: 'boolean' }
    ? boolean
    : S extends { type: 'integer' }
      ? number
      : string;

const HTTP_URL = /^https?:\/\//i;

function checkString(name: string, schema: Extract<JsonSchema, { type: 'string' }>, value: unknown): void {
  if (typeof value !== 'string') throw new ValidationError('invalid_field', `${name} must be a string`);
  if (schema.minLength !== undefined && value.trim().length < schema.minLength) {
    throw new ValidationError('invalid_field', `${name} must not be empty`);
  }
  if (schema.maxLength !== undefined && value.length > schema.maxLength) {
    throw new ValidationError('invalid_field', `${name} is longer than ${schema.maxLength} characters`);
  }
  if (schema.format === 'uri' && !isHttpUrl(value)) {
    throw new ValidationError('invalid_field', `${name} must be an http(s) URL`);
  }
}

function isHttpUrl(value: string): boolean {
  if (!HTTP_URL.test(value)) return false;
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

/**
 * Checks `value` against an object schema and returns it typed. Properties not in the schema are
 * ignored (and not returned), so clients that send extra fields keep working.
 */
export function validate<S extends ObjectSchema>(schema: S, value: unknown): Infer<S> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError('invalid_body', 'The request body must be a JSON object');
  }
  const input = value as Record<string, unknown>;
  const output: Record<string, unknown> = {};
  for (const [name, property] of Object.entries(schema.properties)) {
    const field = input[name];
    if (field === undefined || field === null) {
      if (schema.required?.includes(name)) {
        throw new ValidationError('missing_field', `${name} is required`);
      }
      continue;
    }
    if (property.type === 'string') checkString(name, property, field);
    else if (property.type === 'boolean' && typeof field !== 'boolean') {
      throw new ValidationError('invalid_field', `${name} must be true or false`);
    } else if (property.type === 'integer') {
      if (
        typeof field !== 'number' ||
        !Number.isInteger(field) ||
        field < property.minimum ||
        field > property.maximum
      ) {
        throw new ValidationError(
          'invalid_field',
          `${name} must be a whole number from ${property.minimum} to ${property.maximum}`,
        );
      }
    } else if (property.type === 'object') {
      output[name] = validate(property, field);
    }
    output[name] ??= field;
  }
  return output as Infer<S>;
}
