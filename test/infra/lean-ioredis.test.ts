import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  bundlingAliases,
  COMMANDS_REQUIRE,
  computeAliases,
  INIT_PROMISE,
  leanCommand,
  leanCommander,
  leanCopyPackage,
  leanDataHandler,
  leanDecoder,
  leanScript,
  PREPENDED_DATA_LISTENER,
  PROTOTYPE_LOOP,
  SCRIPT_REJECT_WRAPPER,
} from '../../infra/bundling/lean-ioredis';
import { devScript } from '../support/dev-server';
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

  it("rewrites the installed decoder's private members and DataHandler's data listener, or leaves them alone", () => {
    const decoder = readFileSync(require.resolve('ioredis/built/resp/decoder.js'), 'utf8');
    const dataHandler = readFileSync(require.resolve('ioredis/built/DataHandler.js'), 'utf8');

    const leanDecoderSource = leanDecoder(decoder);
    expect(leanDecoderSource).toBeDefined();
    const body = leanDecoderSource?.slice(leanDecoderSource.indexOf('class Decoder')) ?? '';
    expect(body).not.toMatch(/__classPrivateField|WeakMap|WeakSet/);
    expect(body).toContain('this._Decoder_cursor = 0;');
    expect(leanDecoder('something else')).toBeUndefined();
    // A field read called directly (it would be called on the decoder as `this.F(...)`).
    expect(
      leanDecoder(
        decoder.replace(
          '__classPrivateFieldGet(this, _Decoder_next, "f").call(this, chunk)',
          '__classPrivateFieldGet(this, _Decoder_next, "f")(chunk)',
        ),
      ),
    ).toBeUndefined();
    // A form it does not know (a private field of another object) leaves the decoder as it is.
    expect(
      leanDecoder(
        decoder.replace(
          '__classPrivateFieldSet(this, _Decoder_next,',
          '__classPrivateFieldSet(other, _Decoder_next,',
        ),
      ),
    ).toBeUndefined();

    const leanHandler = leanDataHandler(dataHandler);
    expect(leanHandler).toBeDefined();
    expect(leanHandler).not.toContain(PREPENDED_DATA_LISTENER);
    expect(leanHandler).toContain('redis.stream.on("data", onData);');
    expect(leanDataHandler('something else')).toBeUndefined();
  });

  it("decodes every RESP3 type as the installed decoder does, whatever the chunks' boundaries", () => {
    type Decoded = { kind: string; value: unknown };
    type DecoderModule = {
      Decoder: new (config: {
        onReply: (reply: unknown) => void;
        onErrorReply: (error: unknown) => void;
        onPush: (reply: unknown) => void;
        getTypeMapping: () => Record<number, unknown>;
      }) => { write(chunk: Buffer): void };
      RESP_TYPES: Record<string, number>;
    };
    const installed = require('ioredis/built/resp/decoder.js') as DecoderModule;
    const lean = require(
      join(bundlingAliases(repoRoot).leanCopy as string, 'built', 'resp', 'decoder.js'),
    ) as DecoderModule;
    expect(lean.Decoder).not.toBe(installed.Decoder);

    // Values as comparable JSON: Buffers, Maps, Sets, errors, bigints and NaN kept apart.
    const plain = (value: unknown): unknown => {
      if (Buffer.isBuffer(value)) return { buffer: value.toString('hex') };
      if (value instanceof Map) return { map: [...value].map(([k, v]) => [plain(k), plain(v)]) };
      if (value instanceof Set) return { set: [...value].map(plain) };
      if (value instanceof Error) return { error: `${value.name}: ${value.message}` };
      if (typeof value === 'bigint') return { bigint: String(value) };
      if (typeof value === 'number' && Number.isNaN(value)) return 'NaN';
      if (Array.isArray(value)) return value.map(plain);
      if (value !== null && typeof value === 'object') {
        return { [`${value.constructor?.name}`]: Object.entries(value).map(([k, v]) => [k, plain(v)]) };
      }
      return value;
    };
    const decode = (
      module: DecoderModule,
      stream: Buffer,
      chunkSize: number,
      mapping: Record<number, unknown>,
    ) => {
      const out: Decoded[] = [];
      const decoder = new module.Decoder({
        onReply: (value) => out.push({ kind: 'reply', value: plain(value) }),
        onErrorReply: (value) => out.push({ kind: 'error', value: plain(value) }),
        onPush: (value) => out.push({ kind: 'push', value: plain(value) }),
        getTypeMapping: () => mapping,
      });
      for (let at = 0; at < stream.length; at += chunkSize)
        decoder.write(stream.subarray(at, at + chunkSize));
      return out;
    };

    const big = 'x'.repeat(40_000);
    const stream = Buffer.from(
      [
        '_\r\n#t\r\n#f\r\n:123\r\n:-5\r\n:0\r\n(3492890328409238509324850943850943825024385\r\n(-12\r\n',
        ',3.14\r\n,-1.5e10\r\n,10\r\n,inf\r\n,-inf\r\n,nan\r\n,1.25E-3\r\n',
        '+OK\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n$10\r\nhéllo ✓\r\n',
        `$${big.length}\r\n${big}\r\n`,
        '=15\r\ntxt:Some string\r\n-ERR bad thing\r\n!21\r\nSYNTAX invalid syntax\r\n',
        '*3\r\n:1\r\n$3\r\nfoo\r\n*2\r\n+a\r\n_\r\n*0\r\n*-1\r\n',
        '~2\r\n+a\r\n:2\r\n%2\r\n+k1\r\n:1\r\n$2\r\nk2\r\n*1\r\n+x\r\n%0\r\n',
        '>3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$2\r\nhi\r\n',
        '*2\r\n%1\r\n+inner\r\n~1\r\n,0.5\r\n-ERR inside\r\n:7\r\n',
      ].join(''),
      'utf8',
    );
    const { RESP_TYPES: T } = installed;
    // The type mappings ioredis uses (legacy and resp3 replies, stringNumbers), and none.
    const mappings: Record<number, unknown>[] = [
      {},
      {
        [T.SIMPLE_STRING as number]: Buffer,
        [T.BLOB_STRING as number]: Buffer,
        [T.VERBATIM_STRING as number]: Buffer,
        [T.BIG_NUMBER as number]: String,
        [T.DOUBLE as number]: Buffer,
        [T.BOOLEAN as number]: Number,
        [T.MAP as number]: Array,
        [T.SET as number]: Array,
      },
      {
        [T.BLOB_STRING as number]: Buffer,
        [T.BIG_NUMBER as number]: String,
        [T.SET as number]: Array,
        [T.NUMBER as number]: String,
        [T.DOUBLE as number]: String,
        [T.MAP as number]: Map,
      },
    ];
    for (const [index, mapping] of mappings.entries()) {
      const whole = decode(installed, stream, stream.length, mapping);
      expect(whole.length, `mapping ${index}`).toBe(33);
      // Every chunk size up to 64 bytes (every boundary a small reply can have), then larger ones.
      for (const size of [
        ...Array.from({ length: 64 }, (_, i) => i + 1),
        100,
        1000,
        4096,
        16_384,
        stream.length,
      ]) {
        expect(decode(lean, stream, size, mapping), `mapping ${index}, chunks of ${size}`).toEqual(whole);
        if (size % 16 === 0) expect(decode(installed, stream, size, mapping)).toEqual(whole);
      }
    }
  });

  it('keeps a socket reading through a reply larger than its buffer (no stop and start per reply)', async () => {
    const lean = leanIoredis();
    const server = await spawnRedisServer();
    const client = new lean.Redis(server.url);
    try {
      const value = 'v'.repeat(100_000);
      await client.set('big', value);
      const handle = (client.stream as unknown as { _handle: { readStop: () => number } })._handle;
      let stops = 0;
      const readStop = handle.readStop;
      handle.readStop = function (this: unknown) {
        stops += 1;
        return readStop.call(this);
      };
      const expected = Buffer.from(value);
      for (let i = 0; i < 20; i += 1) expect((await client.getBuffer('big'))?.equals(expected)).toBe(true);
      expect(stops).toBe(0);
      expect(client.stream.listenerCount('data')).toBe(1);
    } finally {
      client.disconnect();
      await server.dispose();
    }
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
    expect([...byName.keys()].sort()).toEqual(['@ioredis/commands', 'debug', 'ioredis']);

    const lean = require(`${repoRoot}/${byName.get('ioredis')}`) as typeof import('ioredis');
    expect(join(repoRoot, byName.get('ioredis') ?? '')).toBe(bundlingAliases(repoRoot).leanCopy);
    // A file of a copy is told back to its package (the bench's breakdowns and profiles).
    for (const name of ['ioredis', '@ioredis/commands']) {
      expect(leanCopyPackage(join(repoRoot, byName.get(name) ?? '', 'built', 'index.js'))).toBe(name);
    }
    expect(leanCopyPackage(require.resolve('ioredis'))).toBeUndefined();
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

  it('makes ioredis the lean copy under npm run dev, whose imports go through the same hook', () => {
    // The Node flags of package.json's dev script, used as written: tsx runs node with its own loader
    // first and then these, as here. A static import, as local/dev.ts has, is resolved before the
    // module runs, so only a hook registered by an earlier --import can see it.
    const { command, flags, entry } = devScript();
    expect(command).toBe('tsx');
    expect(entry).toBe('local/dev.ts');
    const resolved = (nodeFlags: string[]) =>
      execFileSync(
        process.execPath,
        [
          '--import',
          'tsx',
          ...nodeFlags,
          '--input-type=module',
          '-e',
          "import { Redis } from 'ioredis'; console.log(typeof Redis, import.meta.resolve('ioredis'))",
        ],
        { cwd: repoRoot, encoding: 'utf8', timeout: 15_000 },
      ).trim();

    const { leanCopy } = bundlingAliases(repoRoot);
    expect(leanCopy).toBeDefined();
    expect(resolved(flags)).toBe(
      `function ${pathToFileURL(join(leanCopy as string, 'built', 'index.js')).href}`,
    );
    // Without them, the installed one: the flags are what makes the difference.
    expect(resolved([])).toBe(`function ${pathToFileURL(require.resolve('ioredis')).href}`);
  });

  it('falls back to the installed packages, with a warning, when the copies cannot be written', () => {
    const { aliases, warning, leanCopy } = computeAliases(repoRoot, '/dev/null/chat-proxy');
    expect(leanCopy).toBeUndefined();

    expect(aliases.map((alias) => alias.split('=')[0])).toEqual(['debug']);
    expect(warning).toMatch(/Could not write the lean copy of ioredis under \/dev\/null\/chat-proxy/);
    expect(warning).toMatch(
      /Could not write the lean copy of @ioredis\/commands under \/dev\/null\/chat-proxy/,
    );
  });

  it("reads @ioredis/commands' table with JSON.parse, and answers every question about it as the installed one", () => {
    const { aliases } = bundlingAliases(repoRoot);
    const folder = aliases.find((alias) => alias.startsWith('@ioredis/commands='))?.split('=')[1];
    expect(folder).toBeDefined();
    type Commands = typeof import('@ioredis/commands');
    const lean = require(join(repoRoot, folder as string)) as Commands;
    const installed = require('@ioredis/commands') as Commands;
    expect(lean).not.toBe(installed);
    expect(readFileSync(join(repoRoot, folder as string, 'built', 'index.js'), 'utf8')).not.toContain(
      COMMANDS_REQUIRE,
    );

    expect(lean.list).toEqual(installed.list);
    expect(lean.list.length).toBeGreaterThan(200);
    const flags = ['readonly', 'write', 'noscript', 'pubsub', 'movablekeys', 'loading', 'fast', 'blocking'];
    for (const name of lean.list) {
      expect(lean.exists(name), name).toBe(true);
      for (const flag of flags)
        expect(lean.hasFlag(name, flag), `${name} ${flag}`).toBe(installed.hasFlag(name, flag));
    }
    expect(lean.exists('GET', { caseInsensitive: true })).toBe(true);
    expect(lean.exists('no-such-command')).toBe(false);
    // Key positions, fixed and movable (EVAL's KEYS, a sorted set union's, MIGRATE's).
    for (const args of [
      ['get', ['k']],
      ['mset', ['a', '1', 'b', '2']],
      ['evalsha', ['sha', 2, 'k1', 'k2', 'arg']],
      ['zunionstore', ['dest', 2, 'a', 'b', 'WEIGHTS', 1, 2]],
      ['migrate', ['host', 6379, '', 0, 5000, 'KEYS', 'a', 'b']],
      ['xread', ['COUNT', 2, 'STREAMS', 's1', 's2', '0', '0']],
    ] as const) {
      const [name, argv] = args;
      expect(lean.getKeyIndexes(name, [...argv]), name).toEqual(installed.getKeyIndexes(name, [...argv]));
    }
  });

  it('makes the copy once, named after the installed files and the patch, and leaves nothing half-made', () => {
    const cacheRoot = join(repoRoot, 'node_modules', '.cache');
    mkdirSync(cacheRoot, { recursive: true });
    const cacheDir = mkdtempSync(join(cacheRoot, 'lean-ioredis-test-'));
    try {
      const first = computeAliases(repoRoot, cacheDir);
      const copies = readdirSync(cacheDir).sort();
      const markers = copies.map((copy) => join(cacheDir, copy, '.chat-proxy-lean'));
      const madeAt = markers.map((marker) => statSync(marker).mtimeMs);
      const second = computeAliases(repoRoot, cacheDir);

      expect(first.warning).toBeUndefined();
      expect(second).toEqual(first);
      // One finished copy of each, no leftover folder from a build beside them, untouched the second time.
      expect(readdirSync(cacheDir).sort()).toEqual(copies);
      expect(copies).toHaveLength(2);
      expect(copies[0]).toMatch(/^@ioredis\+commands-\d+\.\d+\.\d+-[0-9a-f]{12}$/);
      expect(copies[1]).toMatch(/^ioredis-\d+\.\d+\.\d+-[0-9a-f]{12}$/);
      expect(markers.map((marker) => statSync(marker).mtimeMs)).toEqual(madeAt);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });
});
