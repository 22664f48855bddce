import { register } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { bundlingAliases } from '../infra/bundling/lean-ioredis';
import { repoRoot } from './paths';

/**
 * Makes `ioredis` in this process the bundles' lean copy (infra/bundling/lean-ioredis.ts), so the
 * parts of the bench that run the TypeScript source (the round-trip counts and the diagnostics)
 * run the Redis client the deployed functions run. Imported before bench/main.ts; the dev server,
 * a process of its own, keeps the installed ioredis, as `npm run dev` does.
 */
const { leanCopy, warning } = bundlingAliases(repoRoot);
if (leanCopy !== undefined) {
  const target = pathToFileURL(join(leanCopy, 'built', 'index.js')).href;
  register('./lean-ioredis-resolve.mjs', import.meta.url, { data: { target } });
} else {
  // The bundles fall back to the installed ioredis too (the stack warns at synth); so does this.
  console.error(`[bench] ${warning ?? 'no lean ioredis'}: the source runs the installed ioredis`);
}

/** Whether `ioredis` in this process is the lean copy (read by bench/main.ts for the report). */
export const leanIoredis = leanCopy !== undefined;
