import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  bundlingAliases,
  computeAliases,
  INIT_PROMISE,
  leanCommand,
  leanCommander,
  leanScript,
  PROTOTYPE_LOOP,
  SCRIPT_REJECT_WRAPPER,
} from '../../infra/bundling/lean-ioredis';
import { spawnRedisServer } from '../support/redis-server';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const require = createRequire(import.meta.url);

/** The lean copy the bundles alias `ioredis` to, loaded. */
function leanIoredis(): typeof import('ioredis') {
  const { leanCopy } = bundlingAliases(repoRoot);
  expect(leanCopy).toBeDefined();
  return require(leanCopy as string) as typeof import('ioredis');
}

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

  it("replaces the installed ioredis' per-command resolve and reject closures exactly once", () => {
    const command = readFileSync(require.resolve('ioredis/built/Command.js'), 'utf8');
    const script = readFileSync(require.resolve('ioredis/built/Script.js'), 'utf8');

    const leanCommandSource = leanCommand(command);
    const leanScriptSource = leanScript(script);
    expect(leanCommandSource).toBeDefined();
    expect(leanCommandSource).not.toContain(INIT_PROMISE);
    expect(leanCommandSource).toContain('this._settle(this.transformReply(value));');
    expect(leanScriptSource).toBeDefined();
    expect(leanScriptSource).not.toContain(SCRIPT_REJECT_WRAPPER);
    expect(leanScriptSource).toContain('super.reject(err);');
    expect(leanCommand('something else')).toBeUndefined();
    expect(leanScript(`${SCRIPT_REJECT_WRAPPER}${SCRIPT_REJECT_WRAPPER}`)).toBeUndefined();
  });

  it('settles commands in the copy as the installed ioredis does: replies, errors, transforms, scripts after NOSCRIPT, timeouts', async () => {
    const lean = leanIoredis();
    const installed = require('ioredis') as typeof import('ioredis');
    // A server of its own: the test flushes its scripts and blocks it for a moment.
    const server = await spawnRedisServer();
    const url = server.url;
    const prefix = `lean-ioredis-test:${process.pid}:`;

    const run = async (ioredis: typeof import('ioredis'), name: string) => {
      const client = new ioredis.Redis(url, { keyPrefix: `${prefix}${name}:` });
      const admin = new ioredis.Redis(url);
      try {
        await client.set('text', 'héllo');
        const text = await client.get('text');
        const buffer = await client.getBuffer('text');
        // An error reply rejects, with Redis's message.
        const wrongType = await client.lpush('text', 'x').then(
          () => 'resolved',
          (error: Error) => `${error.name}: ${error.message.split(' ')[0]}`,
        );
        // Argument and reply transformers run (an object in, an object out).
        await client.hset('hash', { a: '1', b: '2' });
        const hash = await client.hgetall('hash');
        const piped = await client.multi().incr('counter').incr('counter').exec();
        // A script: EVAL on first use, EVALSHA after; after SCRIPT FLUSH the EVALSHA is refused
        // with NOSCRIPT and sent again as EVAL, so the caller never sees the error.
        client.defineCommand('twice', { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], 2)" });
        const scripted = client as unknown as { twice: (key: string) => Promise<number> };
        const first = await scripted.twice('scripted');
        const second = await scripted.twice('scripted');
        await admin.script('FLUSH');
        const afterFlush = await scripted.twice('scripted');
        // With friendly stacks, the error's stack is the caller's.
        const friendly = new ioredis.Redis(url, {
          keyPrefix: `${prefix}${name}:`,
          showFriendlyErrorStack: true,
        });
        let friendlyStack: boolean;
        try {
          friendlyStack = await friendly.lpush('text', 'x').then(
            () => false,
            (error: Error) =>
              error.name === 'ReplyError' && (error.stack ?? '').includes('lean-ioredis.test'),
          );
        } finally {
          friendly.disconnect();
        }
        const callback = await new Promise((resolve, reject) =>
          client.get('text', (error, value) => (error ? reject(error) : resolve(value))),
        );
        // A command the server does not answer in time rejects; the late answer changes nothing.
        const slow = new ioredis.Redis(url, { commandTimeout: 30 });
        let timedOut: string;
        try {
          timedOut = await slow
            .eval(
              "local t = redis.call('TIME') local stop = t[1] * 1000000 + t[2] + 150000 " +
                "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop return 1",
              0,
            )
            .then(
              () => 'resolved',
              (error: Error) => error.message,
            );
          // Once the script is done, the connection answers the next command with its own reply.
          await new Promise((resolve) => setTimeout(resolve, 200));
          expect(await slow.echo('after')).toBe('after');
        } finally {
          slow.disconnect();
        }
        return {
          text,
          buffer: buffer?.toString(),
          wrongType,
          hash,
          piped,
          first,
          second,
          afterFlush,
          friendlyStack,
          callback,
          timedOut,
        };
      } finally {
        const keys = await admin.keys(`${prefix}${name}:*`);
        if (keys.length > 0) await admin.del(...keys);
        client.disconnect();
        admin.disconnect();
      }
    };

    let fromLean: Awaited<ReturnType<typeof run>>;
    let fromInstalled: Awaited<ReturnType<typeof run>>;
    try {
      fromLean = await run(lean, 'lean');
      fromInstalled = await run(installed, 'installed');
    } finally {
      await server.dispose();
    }
    expect(fromLean).toEqual({
      text: 'héllo',
      buffer: 'héllo',
      wrongType: 'ReplyError: WRONGTYPE',
      hash: { a: '1', b: '2' },
      piped: [
        [null, 1],
        [null, 2],
      ],
      first: 2,
      second: 4,
      afterFlush: 6,
      friendlyStack: true,
      callback: 'héllo',
      timedOut: 'Command timed out',
    });
    expect(fromLean).toEqual(fromInstalled);
  });

  it("lets a wrapper set on a command's reject take precedence, and drops it when the promise is made again", async () => {
    const lean = leanIoredis();
    const installed = require('ioredis') as typeof import('ioredis');

    const run = async (ioredis: typeof import('ioredis')) => {
      // As Cluster and the himport coordinator wrap it: the original called on the command.
      const command = new ioredis.Command('get', ['key'], { replyEncoding: 'utf8' });
      const original = command.reject;
      let wrapped = 0;
      command.reject = function (this: typeof command, error: Error) {
        wrapped += 1;
        original.call(this, error);
      };
      command.reject(new Error('refused'));
      const rejected = await command.promise.then(
        () => 'resolved',
        (error: Error) => error.message,
      );
      // Pipeline does this to send a command again after a redirection: the wrapper is gone.
      (command as unknown as { initPromise: () => void }).initPromise();
      command.reject(new Error('again'));
      const again = await command.promise.then(
        () => 'resolved',
        (error: Error) => error.message,
      );
      const fresh = new ioredis.Command('get', ['key'], { replyEncoding: 'utf8' });
      fresh.resolve(Buffer.from('value'));
      return { wrapped, rejected, again, resolved: await fresh.promise };
    };

    const expected = { wrapped: 1, rejected: 'refused', again: 'again', resolved: 'value' };
    expect(await run(lean)).toEqual(expected);
    expect(await run(installed)).toEqual(expected);
  });

  it('aliases ioredis to a copy whose clients have every command, and debug to a stub', () => {
    const { aliases, warning } = bundlingAliases(repoRoot);
    expect(warning).toBeUndefined();
    const byName = new Map(aliases.map((alias) => alias.split('=') as [string, string]));
    expect([...byName.keys()].sort()).toEqual(['debug', 'ioredis']);

    const lean = require(`${repoRoot}/${byName.get('ioredis')}`) as typeof import('ioredis');
    expect(join(repoRoot, byName.get('ioredis') ?? '')).toBe(bundlingAliases(repoRoot).leanCopy);
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
    const { aliases, warning, leanCopy } = computeAliases(repoRoot, '/dev/null/chat-proxy');
    expect(leanCopy).toBeUndefined();

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
