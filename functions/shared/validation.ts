import { ValidationError } from './errors';

/**
 * A small JSON Schema subset. The request bodies are described once, as JSON Schema, so the same
 * objects can feed API Gateway request models and the OpenAPI document; this validator checks
 * them in the handlers without pulling a schema library into every bundle.
 */
interface Common {
  readonly description?: string;
  /** null is a value (it unsets a setting), not a missing field. */
  readonly nullable?: true;
}

export type JsonSchema =
  | (Common & {
      readonly type: 'object';
      readonly required?: readonly string[];
      readonly properties: Readonly<Record<string, JsonSchema>>;
      /** false: fields not in `properties` are refused instead of ignored. */
      readonly additionalProperties?: false;
    })
  | (Common & {
      readonly type: 'string';
      readonly minLength?: number;
      readonly maxLength?: number;
      /** Only `http`/`https` URLs pass. */
      readonly format?: 'uri';
      readonly enum?: readonly string[];
    })
  | (Common & { readonly type: 'boolean' })
  | (Common & { readonly type: 'integer' | 'number'; readonly minimum: number; readonly maximum: number });

export type ObjectSchema = Extract<JsonSchema, { type: 'object' }>;
type RequiredKeys<S extends ObjectSchema> = S['required'] extends readonly (infer K)[]
  ? K & keyof S['properties']
  : never;
type Nullable<S> = S extends { nullable: true } ? null : never;

/** The parsed shape of a schema: required properties are present, the others optional. */
export type Infer<S extends JsonSchema> =
  | (S extends ObjectSchema
      ? { [K in RequiredKeys<S>]: Infer<S['properties'][K]> } & {
          [K in Exclude<keyof S['properties'], RequiredKeys<S>>]?: Infer<S['properties'][K]>;
        }
      : S extends { type: 'boolean' }
        ? boolean
        : S extends { type: 'integer' | 'number' }
          ? number
          : string)
  | Nullable<S>;

const HTTP_URL = /^https?:\/\//i;

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
 * Every body problem is one code, `invalid_body`, with a message naming the field: deployed, API
 * Gateway checks bodies against the same schemas first and answers that code too.
 */
function invalid(message: string): ValidationError {
  return new ValidationError('invalid_body', message);
}

function check(name: string, schema: JsonSchema, value: unknown): unknown {
  switch (schema.type) {
    case 'object':
      return validate(schema, value, name);
    case 'boolean':
      if (typeof value !== 'boolean') throw invalid(`${name} must be true or false`);
      return value;
    case 'integer':
    case 'number': {
      const whole = schema.type === 'integer';
      if (typeof value !== 'number' || !Number.isFinite(value) || (whole && !Number.isInteger(value))) {
        throw invalid(`${name} must be a ${whole ? 'whole number' : 'number'}`);
      }
      if (value < schema.minimum || value > schema.maximum) {
        throw invalid(`${name} must be from ${schema.minimum} to ${schema.maximum}`);
      }
      return value;
    }
    case 'string':
      if (typeof value !== 'string') throw invalid(`${name} must be a string`);
      if (schema.minLength !== undefined && value.trim().length < schema.minLength) {
        throw invalid(`${name} must not be empty`);
      }
      if (schema.maxLength !== undefined && value.length > schema.maxLength) {
        throw invalid(`${name} is longer than ${schema.maxLength} characters`);
      }
      if (schema.format === 'uri' && !isHttpUrl(value)) throw invalid(`${name} must be an http(s) URL`);
      if (schema.enum && !schema.enum.includes(value))
        throw invalid(`${name} must be one of: ${schema.enum.join(', ')}`);
      return value;
  }
}

/**
 * Checks `value` against an object schema and returns it typed. Unless the schema says
 * `additionalProperties: false`, properties not in it are ignored (and not returned), so clients
 * that send extra fields keep working.
 */
export function validate<S extends ObjectSchema>(
  schema: S,
  value: unknown,
  name = 'The request body',
): Infer<S> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError('invalid_body', `${name} must be a JSON object`);
  }
  const input = value as Record<string, unknown>;
  if (schema.additionalProperties === false) {
    const unknown = Object.keys(input).filter((field) => !(field in schema.properties));
    if (unknown.length > 0) {
      throw new ValidationError('invalid_body', `Unknown field(s): ${unknown.join(', ')}`);
    }
  }
  const output: Record<string, unknown> = {};
  for (const [field, property] of Object.entries(schema.properties)) {
    const given = input[field];
    if (given === null && property.nullable) {
      output[field] = null;
    } else if (given === undefined || given === null) {
      if (schema.required?.includes(field)) throw new ValidationError('invalid_body', `${field} is required`);
    } else {
      output[field] = check(field, property, given);
    }
  }
  return output as Infer<S>;
}
