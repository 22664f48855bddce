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
    [null, 'invalid_body'],
    [[], 'invalid_body'],
    ['text', 'invalid_body'],
    [{}, 'missing_field'],
    [{ content: null }, 'missing_field'],
    [{ content: '' }, 'invalid_field'],
    [{ content: '   ' }, 'invalid_field'],
    [{ content: 1 }, 'invalid_field'],
    [{ content: 'x'.repeat(11) }, 'invalid_field'],
  ])('rejects %j with %s', (body, code) => {
    expect(() => validate(schemas.content, body)).toThrow(expect.objectContaining({ code }));
    expect(() => validate(schemas.content, body)).toThrow(ValidationError);
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
