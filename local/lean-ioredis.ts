import { register } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bundlingAliases } from '../infra/bundling/lean-ioredis';

/**
 * Makes `ioredis` in this process the deployed functions' lean copy (infra/bundling/lean-ioredis.ts,
 * made under node_modules/.cache on first use), so the TypeScript source runs the Redis client the
 * bundles run. `npm run dev` loads it with `--import` before local/dev.ts, and the bench before
 * bench/main.ts: it must come before the first import of `ioredis`, which a resolve hook only sees
 * if it is registered first.
 */
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const { leanCopy, warning } = bundlingAliases(repoRoot);
if (leanCopy !== undefined) {
  const target = pathToFileURL(join(leanCopy, 'built', 'index.js')).href;
  register('./lean-ioredis-resolve.mjs', import.meta.url, { data: { target } });
} else {
  // The bundles fall back to the installed ioredis too (the stack warns at synth); so does this.
  console.error(`chat-proxy: ${warning ?? 'no lean ioredis'}: running the installed ioredis`);
}

/** Whether `ioredis` in this process is the lean copy (the bench's report says so). */
export const leanIoredis = leanCopy !== undefined;
