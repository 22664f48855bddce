import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resourcesByRoute, synthesize } from './synth';

describe('function bundling', () => {
  const outdir = mkdtempSync(join(tmpdir(), 'chat-proxy-assembly-'));
  afterAll(() => rmSync(outdir, { recursive: true, force: true }));

  it('bundles each route locally into a minified CommonJS file, the health check into a few KB', {
    timeout: 120_000,
  }, () => {
    const { template } = synthesize({}, { bundle: true, outdir });
    const byRoute = resourcesByRoute(template);
    const bundleOf = (routeId: string) => {
      const code = byRoute.get(routeId)?.function.Code as { S3Key?: string } | undefined;
      const hash = code?.S3Key?.replace(/\.zip$/, '');
      return join(outdir, `asset.${hash}`, 'index.js');
    };

    const health = readFileSync(bundleOf('Health'), 'utf8');
    const chat = readFileSync(bundleOf('PostChat'), 'utf8');

    expect(Buffer.byteLength(health)).toBeLessThan(10_000);
    expect(health).toContain('Hello, World!');
    expect(health).toMatch(/module\.exports/);
    // Unminified, esbuild heads each module with a `// path` comment; minified, it writes none.
    // (Line counts say little: embedded certificates and token tables keep their line breaks.)
    expect(chat).not.toMatch(/^\/\/ (functions|node_modules)\//m);
    expect(health.split('\n').length).toBeLessThan(20);
    // The runtime provides the AWS SDK v3, so it stays a require() instead of being bundled.
    expect(chat).toContain('require("@aws-sdk/client-secrets-manager")');
    expect(existsSync(`${bundleOf('PostChat')}.map`)).toBe(false);
  });
});
