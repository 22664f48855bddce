import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../functions/shared/errors';
import { requestSchemas } from '../../functions/shared/schemas';
import { validate } from '../../functions/shared/validation';

const schemas = requestSchemas(
  {
    maxBodyBytes: 1024,
    maxContentChars: 10,
    maxUrlChars: 40,
    maxChatIdLength: 8,
  },
  ['gpt-a'],
);

describe('validate', () => {
  it('returns only the schema properties', () => {
    expect(validate(schemas.content, { content: 'hi', extra: true })).toEqual({ content: 'hi' });
  });

  it.each([
    [null, 'must be a JSON object'],
    [[], 'must be a JSON object'],
    ['text', 'must be a JSON object'],
    [{}, 'content is required'],
    [{ content: null }, 'content is required'],
    [{ content: '' }, 'content must not be empty'],
    [{ content: '   ' }, 'content must not be empty'],
    [{ content: 1 }, 'content must be a string'],
    [{ content: 'x'.repeat(11) }, 'content is longer than 10 characters'],
  ])('rejects %j as invalid_body: "%s"', (body, message) => {
    expect(() => validate(schemas.content, body)).toThrow(
      expect.objectContaining({ code: 'invalid_body', message: expect.stringContaining(message) }),
    );
    expect(() => validate(schemas.content, body)).toThrow(ValidationError);
  });

  it('refuses fields a strict schema does not know, naming them', () => {
    expect(() => validate(schemas.settings, { colour: 'blue', temperature: 1 })).toThrow(
      'Unknown field(s): colour',
    );
  });

  it('keeps null for a nullable field, meaning "unset"', () => {
    expect(validate(schemas.settings, { temperature: null })).toEqual({ temperature: null });
  });

  it.each(['http://example.com/a.png', 'https://example.com/a.png?x=1'])(
    'accepts the image url %s',
    (url) => {
      expect(validate(schemas.image, { content: 'what?', url })).toEqual({ content: 'what?', url });
    },
  );

  it.each([
    'ftp://example.com/a.png',
    'javascript:alert(1)',
    'data:image/png;base64,AAAA',
    'https://',
    '/relative.png',
    `https://example.com/${'x'.repeat(40)}`,
  ])('rejects the image url %s', (url) => {
    expect(() => validate(schemas.image, { content: 'what?', url })).toThrow(ValidationError);
  });
});
