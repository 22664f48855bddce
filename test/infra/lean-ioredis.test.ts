import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  bundlingAliases,
  computeAliases,
  leanCommander,
  PROTOTYPE_LOOP,
} from '../../infra/bundling/lean-ioredis';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const require = createRequire(import.meta.url);

describe('lean ioredis for bundles', () => {
  it('replaces the prototype loop of the installed ioredis exactly once', () => {
    const source = readFileSync(require.resolve('ioredis/built/utils/Commander.js'), 'utf8');
    const lean = leanCommander(source);

    // An ioredis upgrade that changes Commander.js fails here, not silently in the bundles.
    expect(lean).toBeDefined();
    expect(lean).not.toContain(PROTOTYPE_LOOP);
    expect(lean).toContain('Object.setPrototypeOf(Commander.prototype, builtinCommands)');
    expect(leanCommander('something else')).toBeUndefined();
    expect(leanCommander(`${PROTOTYPE_LOOP}\n${PROTOTYPE_LOOP}`)).toBeUndefined();
  });

  it('aliases ioredis to a copy whose clients have every command, and debug to a stub', () => {
    const { aliases, warning } = bundlingAliases(repoRoot);
    expect(warning).toBeUndefined();
    const byName = new Map(aliases.map((alias) => alias.split('=') as [string, string]));
    expect([...byName.keys()].sort()).toEqual(['debug', 'ioredis']);

    const lean = require(`${repoRoot}/${byName.get('ioredis')}`) as typeof import('ioredis');
    const installed = require('ioredis') as typeof import('ioredis');
    expect(lean.Redis).not.toBe(installed.Redis);
    const client = new lean.Redis({ lazyConnect: true });
    const reference = new installed.Redis({ lazyConnect: true });
    try {
      for (const name of ['get', 'getBuffer', 'evalsha', 'lrange', 'lrangeBuffer', 'hset', 'multi', 'call']) {
        expect(typeof (client as unknown as Record<string, unknown>)[name], name).toBe('function');
      }
      // The same methods as the installed client, own or inherited.
      const methods = (object: object) => {
        const names = new Set<string>();
        for (let at = object; at !== Object.prototype; at = Object.getPrototypeOf(at)) {
          for (const name of Object.getOwnPropertyNames(at)) names.add(name);
        }
        return [...names].sort();
      };
      expect(methods(client)).toEqual(methods(reference));
      const cluster = new lean.Cluster([], { lazyConnect: true });
      expect(typeof cluster.evalsha).toBe('function');
      cluster.disconnect();
    } finally {
      client.disconnect();
      reference.disconnect();
    }

    const debug = require(`${repoRoot}/${byName.get('debug')}`) as (namespace: string) => {
      enabled: boolean;
    };
    expect(debug('ioredis:redis').enabled).toBe(false);
  });

  it('falls back to the installed ioredis, with a warning, when the copy cannot be written', () => {
    const { aliases, warning } = computeAliases(repoRoot, '/dev/null/chat-proxy');

    expect(aliases.map((alias) => alias.split('=')[0])).toEqual(['debug']);
    expect(warning).toMatch(/Could not write the lean copy of ioredis under \/dev\/null\/chat-proxy/);
  });

  it('makes the copy once, named after the installed files and the patch, and leaves nothing half-made', () => {
    const cacheRoot = join(repoRoot, 'node_modules', '.cache');
    mkdirSync(cacheRoot, { recursive: true });
    const cacheDir = mkdtempSync(join(cacheRoot, 'lean-ioredis-test-'));
    try {
      const first = computeAliases(repoRoot, cacheDir);
      const [copy] = readdirSync(cacheDir);
      const marker = join(cacheDir, copy ?? '', '.chat-proxy-lean');
      const madeAt = statSync(marker).mtimeMs;
      const second = computeAliases(repoRoot, cacheDir);

      expect(first.warning).toBeUndefined();
      expect(second).toEqual(first);
      // One finished copy, no leftover folder from the build beside it, untouched the second time.
      expect(readdirSync(cacheDir)).toEqual([copy]);
      expect(copy).toMatch(/^ioredis-\d+\.\d+\.\d+-[0-9a-f]{12}$/);
      expect(statSync(marker).mtimeMs).toBe(madeAt);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });
});
