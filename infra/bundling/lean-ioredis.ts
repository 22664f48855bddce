import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';

/**
 * Changes to ioredis in every function that talks to Redis, for cold starts, garbage collection and
 * the time a reply takes to decode, applied when bundling; `npm run dev` and the bench's source runs
 * resolve `ioredis` itself to the copy too (local/lean-ioredis.ts), and the tests use the installed
 * packages as they are:
 *
 * - ioredis' `Commander.js` puts ~600 generated command methods (`get`, `getBuffer`, ...) on a
 *   class prototype one by one at import. On Node 20 that costs about 10 ms: V8 copies the class
 *   prototype's property list on every addition. The lean copy builds the same methods on a plain
 *   object and makes it the prototype's own prototype, so `redis.get` resolves exactly as before
 *   (one step further up the chain) and `Redis`, `Cluster` and `Pipeline` are unchanged.
 * - ioredis' `Command.js` gives every command two closures of its own, `resolve` and `reject`,
 *   made inside its promise's executor and kept as the command's own properties. With that shape,
 *   V8 keeps what a settled command resolved (a reply, 40 KB of history for a turn) through the
 *   next young-generation collections, until a full collection: in a loop of bare `GET`s of a 40 KB
 *   value, about 200 KB a collection was promoted on Node 20 and 4 MB on Node 24, against none when
 *   the same code resolves through methods. The lean copy keeps the promise's own resolve and reject
 *   on the command and makes `resolve` and `reject` prototype methods that call them, and
 *   `Script.js`'s wrapper of a script command's `reject` (forget the script on that socket after a
 *   NOSCRIPT) a method of the script's command class: the same behaviour (a wrapper set on a
 *   command, as Cluster sets one on `reject`, still wins until the command's promise is made again).
 * - ioredis' RESP decoder (`resp/decoder.js`) is TypeScript compiled for targets without private
 *   class members: each of its ~250 reads and writes of its cursor and each call of one of its own
 *   methods goes through a helper that checks a WeakMap or WeakSet (two lookups for a read). A turn's
 *   replies (40 KB of history) take over 2,000 of these checks. The lean copy makes the three fields ordinary
 *   properties and calls the methods directly: the same decoder, about 40 µs less per turn.
 * - ioredis' `DataHandler.js` listens for a socket's data with `prependListener`, which, unlike
 *   `on`, does not tell the stream that a data listener exists: every chunk read is then buffered and
 *   handed over a tick later, and one over 16 KB (a turn's history) also stops the socket reading
 *   and starts it again (two system calls). The lean copy uses `on` when it is the first listener,
 *   as it always is, and `prependListener` otherwise, as before.
 * - @ioredis/commands' table of commands, which ioredis reads at import, is parsed by `JSON.parse`
 *   from a string instead of compiled as an object literal (see COMMANDS_PATCHES).
 * - `debug`, which ioredis logs through, is replaced by `no-debug.cjs` (never enabled in Lambda).
 *
 * The copies live in `node_modules/.cache/chat-proxy/`, so their own dependencies resolve to the
 * installed ones. Each is named after what it was made from (the installed files and the patches), so
 * a copy, once in place, is never changed or removed: a reinstall or a new patch makes a new one.
 */

/** The loop in ioredis' built/utils/Commander.js that the lean copy replaces. */
export const PROTOTYPE_LOOP = `commands.forEach(function (commandName) {
    Commander.prototype[commandName] = generateFunction(commandName, commandName, "utf8");
    Commander.prototype[commandName + "Buffer"] = generateFunction(commandName + "Buffer", commandName, null);
});`;

const BUILTINS_OBJECT = `const builtinCommands = {};
commands.forEach(function (commandName) {
    builtinCommands[commandName] = generateFunction(commandName, commandName, "utf8");
    builtinCommands[commandName + "Buffer"] = generateFunction(commandName + "Buffer", commandName, null);
});
// chat-proxy (infra/bundling/lean-ioredis.ts): one prototype link instead of ~600 additions.
Object.setPrototypeOf(Commander.prototype, builtinCommands);`;

/** `source` with `from` replaced by `to`, or undefined unless `from` occurs exactly once. */
function replaceOnce(source: string, from: string, to: string): string | undefined {
  const at = source.indexOf(from);
  if (at < 0 || source.indexOf(from, at + 1) >= 0) return undefined;
  return source.slice(0, at) + to + source.slice(at + from.length);
}

/** Commander.js with the loop replaced, or undefined if this ioredis no longer has the loop. */
export function leanCommander(source: string): string | undefined {
  return replaceOnce(source, PROTOTYPE_LOOP, BUILTINS_OBJECT);
}

/** The closures `initPromise` gives each command, inside its promise's executor. */
const COMMAND_CLOSURES = `            this.resolve = this._convertValue(resolve);
            this.reject = (err) => {
                this._clearTimers();
                this.isSettled = true;
                if (this.errorStack) {
                    reject((0, utils_1.optimizeErrorStack)(err, this.errorStack.stack, __dirname));
                }
                else {
                    reject(err);
                }
            };
`;

const PROMISE_START = `        const promise = new Promise((resolve, reject) => {
`;

/** Command.js's `initPromise`, whose per-command closures the lean copy replaces. */
export const INIT_PROMISE = `    initPromise() {
        this.isResolved = false;
        this.isSettled = false;
${PROMISE_START}            if (!this.transformed) {
                this.transformed = true;
                const transformer = Command._transformer.argument[this.name];
                if (transformer) {
                    this.args = transformer(this.args);
                }
                this.stringifyArguments();
            }
${COMMAND_CLOSURES}        });
        this.promise = (0, standard_as_callback_1.default)(promise, this.callback);
    }
`;

/**
 * The same `initPromise` keeping the promise's own resolve and reject, then `resolve` and `reject`
 * as methods doing what `_convertValue`'s closure and the `reject` closure did.
 */
const INIT_PROMISE_WITH_METHODS = `${INIT_PROMISE.replace(
  PROMISE_START,
  `        // chat-proxy (infra/bundling/lean-ioredis.ts): no closures of the command's own. A promise
        // made again drops wrappers set on the old one, as the closures made again used to.
        if (Object.prototype.hasOwnProperty.call(this, "resolve")) delete this.resolve;
        if (Object.prototype.hasOwnProperty.call(this, "reject")) delete this.reject;
${PROMISE_START}            this._settle = resolve;
            this._fail = reject;
`,
).replace(COMMAND_CLOSURES, '')}    resolve(value) {
        try {
            this._clearTimers();
            this._settle(this.transformReply(value));
            this.isResolved = true;
            this.isSettled = true;
        }
        catch (err) {
            this.reject(err);
        }
        return this.promise;
    }
    reject(err) {
        this._clearTimers();
        this.isSettled = true;
        if (this.errorStack) {
            this._fail((0, utils_1.optimizeErrorStack)(err, this.errorStack.stack, __dirname));
        }
        else {
            this._fail(err);
        }
    }
`;

/** Command.js settling through methods, or undefined if this ioredis no longer has that `initPromise`. */
export function leanCommand(source: string): string | undefined {
  return replaceOnce(source, INIT_PROMISE, INIT_PROMISE_WITH_METHODS);
}

/** Script.js's per-write wrapper of a script command's `reject`, which the lean copy replaces. */
export const SCRIPT_REJECT_WRAPPER = `            toWritable(socket) {
                const origReject = this.reject;
                this.reject = (err) => {
                    if (err.message.indexOf("NOSCRIPT") !== -1) {
                        socketHasScriptLoaded.delete(socket);
                    }
                    origReject.call(this, err);
                };
`;

/** The same as a method of the script's command class, which remembers the socket written to. */
const SCRIPT_REJECT_METHOD = `            reject(err) {
                // chat-proxy (infra/bundling/lean-ioredis.ts): a method, not a closure per write.
                if (this.scriptSocket !== undefined && err.message.indexOf("NOSCRIPT") !== -1) {
                    socketHasScriptLoaded.delete(this.scriptSocket);
                }
                super.reject(err);
            }
            toWritable(socket) {
                this.scriptSocket = socket;
`;

/** Script.js with the method, or undefined if this ioredis no longer has the wrapper. */
export function leanScript(source: string): string | undefined {
  return replaceOnce(source, SCRIPT_REJECT_WRAPPER, SCRIPT_REJECT_METHOD);
}

/** DataHandler.js's data listener, which the lean copy adds with `on` when it comes first. */
export const PREPENDED_DATA_LISTENER = `        redis.stream.prependListener("data", (data) => {
            try {
                decoder.write(data);
            }
            catch (err) {
                this.returnFatalError(err);
            }
        });
        // prependListener() doesn't enable flowing mode automatically - we need to resume the stream manually
        redis.stream.resume();
`;

const DATA_LISTENER = `        const onData = (data) => {
            try {
                decoder.write(data);
            }
            catch (err) {
                this.returnFatalError(err);
            }
        };
        // chat-proxy (infra/bundling/lean-ioredis.ts): \`on\` lets the stream hand each chunk over as
        // it is read (\`prependListener\` leaves it buffering them); the parser still comes first.
        if (redis.stream.listenerCount("data") === 0) {
            redis.stream.on("data", onData);
        }
        else {
            redis.stream.prependListener("data", onData);
        }
        redis.stream.resume();
`;

/** DataHandler.js with the listener added by `on`, or undefined if this ioredis no longer has it. */
export function leanDataHandler(source: string): string | undefined {
  return replaceOnce(source, PREPENDED_DATA_LISTENER, DATA_LISTENER);
}

/**
 * The top-level arguments of the call whose `(` is at `open` in `source`, and the index after its
 * `)`; quotes and nested brackets are skipped. Undefined if the call does not close.
 */
function callArguments(source: string, open: number): { args: string[]; end: number } | undefined {
  const args: string[] = [];
  let depth = 0;
  let start = open + 1;
  for (let i = open; i < source.length; i += 1) {
    const c = source[i];
    if (c === '"' || c === "'" || c === '`') {
      const close = source.indexOf(c, i + 1);
      if (close < 0) return undefined;
      i = close;
    } else if (c === '(' || c === '[' || c === '{') {
      depth += 1;
    } else if (c === ')' || c === ']' || c === '}') {
      depth -= 1;
      if (depth === 0) {
        args.push(source.slice(start, i).trim());
        return { args, end: i + 1 };
      }
    } else if (c === ',' && depth === 1) {
      args.push(source.slice(start, i).trim());
      start = i + 1;
    }
  }
  return undefined;
}

/**
 * decoder.js with its private members made plain: the WeakMap fields `F` become properties
 * `this.F` (read as such, written as `(this.F = value)`, set up in the constructor), calls of private
 * methods through the WeakSet check call the method itself, and a static field `{ value }` is read
 * from that object. Undefined unless every access has one of those forms, so a decoder compiled
 * differently is bundled as it is.
 */
export function leanDecoder(source: string): string | undefined {
  const fields = [...source.matchAll(/(_Decoder_\w+) = new WeakMap\(\), /g)].map(
    (match) => match[1] as string,
  );
  const instances = '_Decoder_instances = new WeakSet(), ';
  const declarations = `${fields.map((field) => `${field} = new WeakMap(), `).join('')}${instances}`;
  if (fields.length === 0 || !source.includes(declarations)) return undefined;
  // A field read called directly would be called on the decoder once it reads `this.F`.
  if (/, "f"\)\(/.test(source)) return undefined;
  let text = source
    .replace(declarations, '')
    .replace('        _Decoder_instances.add(this);\n', '')
    .replace(/__classPrivateFieldGet\(this, _Decoder_instances, "m", (_Decoder_\w+)\)/g, '$1')
    .replace(/__classPrivateFieldGet\(_a, _a, "f", (_Decoder_\w+)\)/g, '$1.value');
  for (const field of fields) {
    text = text
      .replace(new RegExp(`^( +)${field}\\.set\\(this, (.*)\\);$`, 'm'), `$1this.${field} = $2;`)
      .replaceAll(`__classPrivateFieldGet(this, ${field}, "f")`, `this.${field}`);
  }
  const setter = '__classPrivateFieldSet(';
  let out = '';
  let from = 0;
  for (let at = text.indexOf(setter); at >= 0; at = text.indexOf(setter, from)) {
    const call = callArguments(text, at + setter.length - 1);
    const [receiver, field, value, kind, ...rest] = call?.args ?? [];
    if (call === undefined || receiver !== 'this' || !fields.includes(field as string) || kind !== '"f"')
      return undefined;
    if (rest.length > 0 || value === undefined) return undefined;
    out += `${text.slice(from, at)}(this.${field} = ${value})`;
    from = call.end;
  }
  out += text.slice(from);
  // Only the helpers' own definitions may still name them, and nothing the WeakMaps held is left.
  const body = out.slice(out.indexOf('class Decoder'));
  if (/__classPrivateField|_Decoder_instances|WeakMap|WeakSet/.test(body)) return undefined;
  if (fields.some((field) => new RegExp(`${field}\\.(get|set|has)\\(`).test(body))) return undefined;
  return out;
}

export interface BundlingAliases {
  /** esbuild `--alias` values, paths relative to the project root (esbuild's working directory). */
  readonly aliases: string[];
  /** The lean copy's folder (what `ioredis` is aliased to), unless the installed one is used. */
  readonly leanCopy?: string;
  /** Set when a package could not be made lean: bundles use the installed one as it is. */
  readonly warning?: string;
}

/** A file of a lean copy: written as `patch` makes it from the package's `from` (else `file`). */
interface Patch {
  readonly file: string;
  readonly from?: string;
  readonly patch: (source: string) => string | undefined;
  /** What `patch` looks for, named in the warning when it is not there. */
  readonly expects: string;
}

/** Each file the lean copy of ioredis changes, how, and what the change looks for in it. */
const IOREDIS_PATCHES: readonly Patch[] = [
  {
    file: join('built', 'utils', 'Commander.js'),
    patch: leanCommander,
    expects: 'the loop of PROTOTYPE_LOOP',
  },
  { file: join('built', 'Command.js'), patch: leanCommand, expects: 'the initPromise of INIT_PROMISE' },
  {
    file: join('built', 'Script.js'),
    patch: leanScript,
    expects: 'the reject wrapper of SCRIPT_REJECT_WRAPPER',
  },
  {
    file: join('built', 'DataHandler.js'),
    patch: leanDataHandler,
    expects: 'the data listener of PREPENDED_DATA_LISTENER',
  },
  {
    file: join('built', 'resp', 'decoder.js'),
    patch: leanDecoder,
    expects: 'private members compiled to WeakMaps, the forms leanDecoder rewrites',
  },
];

/** Where @ioredis/commands' index loads its table of Redis commands. */
export const COMMANDS_REQUIRE = 'require("./commands.json")';
const PARSED_COMMANDS = 'commands.parsed.js';

/**
 * @ioredis/commands' table of every Redis command (37 KB of JSON), which esbuild bundles as an
 * object literal: V8 parses that once when it loads the bundle and again when the module runs. As
 * a string given to `JSON.parse` it is scanned once, and parsed faster (about 3 ms less per
 * Redis function's cold import on a slow host). The same table, read the same way.
 */
const COMMANDS_PATCHES: readonly Patch[] = [
  {
    file: join('built', 'index.js'),
    patch: (source) => replaceOnce(source, COMMANDS_REQUIRE, `require("./${PARSED_COMMANDS}")`),
    expects: `the table's ${COMMANDS_REQUIRE}`,
  },
  {
    file: join('built', PARSED_COMMANDS),
    from: join('built', 'commands.json'),
    patch: (json) =>
      `"use strict";\nmodule.exports = JSON.parse(${JSON.stringify(JSON.stringify(JSON.parse(json)))});\n`,
    expects: 'a JSON table of commands',
  },
];

/** The packages with a lean copy, the files each changes, and what bundling it as installed costs. */
const LEAN_PACKAGES: readonly { name: string; patches: readonly Patch[]; stockCost: string }[] = [
  {
    name: 'ioredis',
    patches: IOREDIS_PATCHES,
    stockCost:
      'about 10 ms more cold start per Redis function, settled replies kept through young-generation ' +
      'collections, and slower reply decoding',
  },
  {
    name: '@ioredis/commands',
    patches: COMMANDS_PATCHES,
    stockCost: 'about 3 ms more cold start per Redis function on a slow host',
  },
];

/** A lean copy's folder name: the package's name (`/` as `+`), its version and a fingerprint. */
function copyFolder(name: string, version: string, fingerprint: string): string {
  return `${name.replace('/', '+')}-${version}-${fingerprint}`;
}

/** The package a file of a lean copy (`…/node_modules/.cache/chat-proxy/<copy>/…`) belongs to. */
export function leanCopyPackage(path: string): string | undefined {
  const copy = /node_modules\/\.cache\/chat-proxy\/(.+?)-\d+\.\d+\.\d+[^/]*-[0-9a-f]{12}\//.exec(path);
  return copy?.[1]?.replace('+', '/');
}
/** Written last into a finished copy. */
const MARKER = '.chat-proxy-lean';

let cached: BundlingAliases | undefined;

/** The `--alias` arguments for every function's bundle (computed once per synth). */
export function bundlingAliases(projectRoot: string): BundlingAliases {
  if (cached === undefined) cached = computeAliases(projectRoot);
  return cached;
}

/**
 * The aliases, making the lean copies in `cacheDir` if they are not there yet. The copies must sit
 * under the project's node_modules, where their own dependencies resolve. A package that cannot be
 * made lean is bundled as it is, with a warning.
 */
export function computeAliases(
  projectRoot: string,
  cacheDir = join(projectRoot, 'node_modules', '.cache', 'chat-proxy'),
): BundlingAliases {
  const aliases = ['debug=./infra/bundling/no-debug.cjs'];
  const warnings: string[] = [];
  let leanCopy: string | undefined;
  for (const { name, patches, stockCost } of LEAN_PACKAGES) {
    const made = leanCopyOf(projectRoot, cacheDir, name, patches);
    if (typeof made === 'string') {
      aliases.push(`${name}=./${relative(projectRoot, made)}`);
      if (name === 'ioredis') leanCopy = made;
    } else {
      warnings.push(`${made.reason}; bundling the installed ${name} as it is (${stockCost}).`);
    }
  }
  return {
    aliases,
    ...(leanCopy ? { leanCopy } : {}),
    ...(warnings.length ? { warning: warnings.join(' ') } : {}),
  };
}

/** The folder of `name`'s lean copy under `cacheDir`, made if missing, or why it could not be. */
function leanCopyOf(
  projectRoot: string,
  cacheDir: string,
  name: string,
  patches: readonly Patch[],
): string | { reason: string } {
  const installed = join(projectRoot, 'node_modules', name);
  const { version } = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as {
    version: string;
  };
  const patched = new Map<string, string>();
  for (const { file, from, patch, expects } of patches) {
    const text = patch(readFileSync(join(installed, from ?? file), 'utf8'));
    if (text === undefined) {
      return {
        reason:
          `${name} ${version}: ${from ?? file} no longer holds ${expects} in infra/bundling/lean-ioredis.ts ` +
          '(update it for this version)',
      };
    }
    patched.set(file, text);
  }
  let building: string | undefined;
  try {
    // The package itself, should its node_modules folder be a link (npm link, pnpm).
    const source = realpathSync(installed);
    const target = join(cacheDir, copyFolder(name, version, fingerprint(source, patched)));
    if (!existsSync(join(target, MARKER))) {
      // Built beside the target and renamed into place in one step, so that concurrent synths
      // (test workers) never bundle a half-written copy; the marker is the last file written.
      mkdirSync(cacheDir, { recursive: true });
      building = `${target}.${process.pid}.${Date.now()}`;
      cpSync(source, building, { recursive: true, dereference: true });
      for (const [file, text] of patched) writeFileSync(join(building, file), text);
      writeFileSync(join(building, MARKER), '');
      try {
        renameSync(building, target);
        building = undefined;
      } catch (error) {
        // Another process renamed its identical copy into place first.
        if (!existsSync(join(target, MARKER))) throw error;
      }
    }
    return target;
  } catch (error) {
    return {
      reason: `Could not write the lean copy of ${name} under ${cacheDir} (${(error as Error).message})`,
    };
  } finally {
    if (building !== undefined) rmSync(building, { recursive: true, force: true });
  }
}

/** A short hash of the package's files (paths, sizes, modification times) and the patched files. */
function fingerprint(packageDir: string, patched: ReadonlyMap<string, string>): string {
  const hash = createHash('sha256');
  for (const [file, text] of patched) hash.update(`${file}\0${text}\0`);
  const files = readdirSync(packageDir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
  for (const file of files) {
    const { size, mtimeMs } = statSync(file);
    hash.update(`${relative(packageDir, file)}\0${size}\0${mtimeMs}\n`);
  }
  return hash.digest('hex').slice(0, 12);
}
