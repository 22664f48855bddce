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
 * Two cold-start savings in every function that talks to Redis, applied when bundling only (tests,
 * the dev server and `tsx` use the installed packages as they are):
 *
 * - ioredis' `Commander.js` puts ~600 generated command methods (`get`, `getBuffer`, ...) on a
 *   class prototype one by one at import. On Node 20 that costs about 10 ms: V8 copies the class
 *   prototype's property list on every addition. The lean copy builds the same methods on a plain
 *   object and makes it the prototype's own prototype, so `redis.get` resolves exactly as before
 *   (one step further up the chain) and `Redis`, `Cluster` and `Pipeline` are unchanged.
 * - `debug`, which ioredis logs through, is replaced by `no-debug.cjs` (never enabled in Lambda).
 *
 * The copy lives in `node_modules/.cache/chat-proxy/`, so its own dependencies resolve to the
 * installed ones. It is named after what it was made from (the installed files and the patch), so a
 * copy, once in place, is never changed or removed: a reinstall or a new patch makes a new one.
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

/** Commander.js with the loop replaced, or undefined if this ioredis no longer has the loop. */
export function leanCommander(source: string): string | undefined {
  const at = source.indexOf(PROTOTYPE_LOOP);
  if (at < 0 || source.indexOf(PROTOTYPE_LOOP, at + 1) >= 0) return undefined;
  return source.replace(PROTOTYPE_LOOP, BUILTINS_OBJECT);
}

export interface BundlingAliases {
  /** esbuild `--alias` values, paths relative to the project root (esbuild's working directory). */
  readonly aliases: string[];
  /** Set when the installed ioredis could not be made lean: bundles use it as it is. */
  readonly warning?: string;
}

const COMMANDER = join('built', 'utils', 'Commander.js');
/** Written last into a finished copy. */
const MARKER = '.chat-proxy-lean';

let cached: BundlingAliases | undefined;

/** The `--alias` arguments for every function's bundle (computed once per synth). */
export function bundlingAliases(projectRoot: string): BundlingAliases {
  if (cached === undefined) cached = computeAliases(projectRoot);
  return cached;
}

/**
 * The aliases, making the lean copy in `cacheDir` if it is not there yet. The copy must sit under
 * the project's node_modules, where its own dependencies resolve.
 */
export function computeAliases(
  projectRoot: string,
  cacheDir = join(projectRoot, 'node_modules', '.cache', 'chat-proxy'),
): BundlingAliases {
  const aliases = ['debug=./infra/bundling/no-debug.cjs'];
  /** The stock ioredis, and why: the bundles still work, only slower to import. */
  const stock = (reason: string): BundlingAliases => ({
    aliases,
    warning: `${reason}; bundling the installed ioredis as it is (about 10 ms more cold start per Redis function).`,
  });
  const installed = join(projectRoot, 'node_modules', 'ioredis');
  const { version } = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as {
    version: string;
  };
  const lean = leanCommander(readFileSync(join(installed, COMMANDER), 'utf8'));
  if (lean === undefined) {
    return stock(
      `ioredis ${version}: built/utils/Commander.js no longer holds the loop that ` +
        'infra/bundling/lean-ioredis.ts replaces (update PROTOTYPE_LOOP for this version)',
    );
  }
  let target: string;
  let building: string | undefined;
  try {
    // The package itself, should node_modules/ioredis be a link (npm link, pnpm).
    const source = realpathSync(installed);
    target = join(cacheDir, `ioredis-${version}-${fingerprint(source, lean)}`);
    if (!existsSync(join(target, MARKER))) {
      // Built beside the target and renamed into place in one step, so that concurrent synths
      // (test workers) never bundle a half-written copy; the marker is the last file written.
      mkdirSync(cacheDir, { recursive: true });
      building = `${target}.${process.pid}.${Date.now()}`;
      cpSync(source, building, { recursive: true, dereference: true });
      writeFileSync(join(building, COMMANDER), lean);
      writeFileSync(join(building, MARKER), '');
      try {
        renameSync(building, target);
        building = undefined;
      } catch (error) {
        // Another process renamed its identical copy into place first.
        if (!existsSync(join(target, MARKER))) throw error;
      }
    }
  } catch (error) {
    return stock(`Could not write the lean copy of ioredis under ${cacheDir} (${(error as Error).message})`);
  } finally {
    if (building !== undefined) rmSync(building, { recursive: true, force: true });
  }
  return { aliases: [...aliases, `ioredis=./${relative(projectRoot, target)}`] };
}

/** A short hash of the package's files (paths, sizes, modification times) and the patched file. */
function fingerprint(packageDir: string, lean: string): string {
  const hash = createHash('sha256').update(lean);
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
