import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { StreamingHandler } from '../../functions/shared/lambda-stream';
import { apiEvent } from '../support/events';
import { startFakeOpenAi } from '../support/fake-openai';
import { invokeStreaming } from '../support/lambda-stream';
import { resourcesByRoute, synthesize } from './synth';

describe('function bundling', () => {
  const outdir = mkdtempSync(join(tmpdir(), 'chat-proxy-assembly-'));
  let bundleOf: (routeId: string) => string;

  beforeAll(() => {
    // As on the Lambda runtime, only the AWS SDK is there besides the bundle.
    mkdirSync(join(outdir, 'node_modules'));
    symlinkSync(
      fileURLToPath(new URL('../../node_modules/@aws-sdk', import.meta.url)),
      join(outdir, 'node_modules', '@aws-sdk'),
    );
    const { template } = synthesize({}, { bundle: true, outdir });
    const byRoute = resourcesByRoute(template);
    bundleOf = (routeId: string) => {
      const code = byRoute.get(routeId)?.function.Code as { S3Key?: string } | undefined;
      const hash = code?.S3Key?.replace(/\.zip$/, '');
      return join(outdir, `asset.${hash}`, 'index.js');
    };
  }, 120_000);
  afterAll(() => rmSync(outdir, { recursive: true, force: true }));

  it('bundles each route locally into a minified CommonJS file, the health check into a few KB', () => {
    const health = readFileSync(bundleOf('Health'), 'utf8');
    const chat = readFileSync(bundleOf('PostChat'), 'utf8');

    expect(Buffer.byteLength(health)).toBeLessThan(10_000);
    expect(health).toContain('Hello, World!');
    expect(health).toMatch(/module\.exports/);
    // Unminified, esbuild heads each module with a `// path` comment; minified, it writes none.
    // (Line counts say little: embedded certificates keep their line breaks.)
    expect(chat).not.toMatch(/^\/\/ (functions|node_modules)\//m);
    expect(health.split('\n').length).toBeLessThan(20);
    // Secrets are read with a built-in SigV4 client, not the SDK. The one AWS SDK package left is
    // the credential chain for profiles and SSO: a dynamic import, never bundled (the runtime has it).
    for (const routeId of ['PostChat', 'GetSystem', 'PostMod']) {
      const code = readFileSync(bundleOf(routeId), 'utf8');
      const required = [...code.matchAll(/(?:require|import)\("(@aws-sdk\/[^"]+)"\)/g)];
      expect(new Set(required.map((match) => match[1])), routeId).toEqual(
        new Set(['@aws-sdk/credential-provider-node']),
      );
    }
    expect(existsSync(`${bundleOf('PostChat')}.map`)).toBe(false);
  });

  it('bundles the lean ioredis (infra/bundling/lean-ioredis.ts) into every Redis function', () => {
    for (const routeId of ['PostChat', 'GetSystem']) {
      const code = readFileSync(bundleOf(routeId), 'utf8');
      // The `debug` package looks for supports-color; its stub does not.
      expect(code, routeId).not.toContain('supports-color');
      expect(code, routeId).toMatch(/Object\.setPrototypeOf\(\w+\.prototype,\w+\)/);
      // Commands settle through methods, not closures of their own.
      expect(code, routeId).toMatch(/this\._settle\(this\.transformReply\(\w+\)\)/);
      expect(code, routeId).toContain('this.scriptSocket=');
      // The decoder's cursor is a property, not a WeakMap entry; the data listener is added by `on`.
      expect(code, routeId).toContain('this._Decoder_cursor=0');
      expect(code, routeId).toMatch(/\.stream\.on\("data",\w+\)/);
      // The table of Redis commands is a string for JSON.parse, not an object literal.
      expect(code, routeId).toContain('JSON.parse(\'{"acl":{');
      expect(code, routeId).not.toContain('{acl:{arity:');
    }
  });

  it("ships the tokenizer's ranks as JSON beside the chat and image bundles only", () => {
    for (const routeId of ['PostChat', 'PostImg']) {
      const ranks = join(bundleOf(routeId), '..', 'o200k_base.json');
      expect(statSync(ranks).size, routeId).toBeGreaterThan(1_000_000);
      expect(statSync(bundleOf(routeId)).size, routeId).toBeLessThan(1_000_000);
    }
    expect(existsSync(join(bundleOf('GetChat'), '..', 'o200k_base.json'))).toBe(false);
  });

  it('runs the bundled chat function end to end, tokenizer included', async () => {
    const fake = await startFakeOpenAi();
    Object.assign(process.env, {
      REDIS_URL: inject('redisUrl'),
      OPENAI_BASE_URL: fake.baseURL,
      OPENAI_API_KEY: 'sk-test',
      MAX_CONTEXT_TOKENS: '1000',
    });
    const awsSdkLoaded = () =>
      Object.keys(createRequire(import.meta.url).cache).filter((path) => path.includes('/@aws-sdk/'));
    const loadedBefore = awsSdkLoaded();
    try {
      const { handler } = createRequire(import.meta.url)(bundleOf('PostChat')) as {
        handler: StreamingHandler;
      };

      const tooLarge = await invokeStreaming(
        handler,
        apiEvent({
          method: 'POST',
          resource: '/{chat_id}/chat',
          chatId: 'bundled',
          json: { content: 'word '.repeat(2000) },
        }),
      );
      const result = await invokeStreaming(
        handler,
        apiEvent({
          method: 'POST',
          resource: '/{chat_id}/chat',
          chatId: 'bundled',
          json: { content: 'hi', stream: true },
        }),
      );

      expect(JSON.parse(tooLarge.body).error.code).toBe('message_too_large');
      expect(result.events.at(-1)?.event).toBe('done');
      // Importing and running the function loaded nothing of the AWS SDK.
      expect(awsSdkLoaded()).toEqual(loadedBefore);
    } finally {
      delete process.env.MAX_CONTEXT_TOKENS;
      await fake.close();
    }
  });
});
