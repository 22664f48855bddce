import { fileURLToPath } from 'node:url';

/**
 * How every function is bundled, in one place: the stack's NodejsFunction bundling
 * (infra/constructs/route-function.ts), and the bench, which builds the same bundles with esbuild
 * itself to run and measure them (bench/bundles.ts, bench/cold-start.ts).
 */

/** The Lambda runtime's Node.js (the functions run on NODEJS_24_X). */
export const BUNDLE_TARGET = 'node24';

/**
 * Left out of every bundle: the Node.js runtime ships the AWS SDK v3, so bundling it would only
 * grow the package; the tokenizer's 2 MB of ranks travel as a JSON file beside the bundle
 * (infra/bundling/write-token-ranks.mjs).
 */
export const EXTERNAL_MODULES: readonly string[] = ['@aws-sdk/*', 'gpt-tokenizer/bpeRanks/*'];

/**
 * The bundling hook that writes the tokenizer's ranks beside a bundle (the functions that count
 * tokens): `node <this> <output dir>`.
 */
export const TOKEN_RANKS_HOOK = fileURLToPath(new URL('./write-token-ranks.mjs', import.meta.url));

/** Minified, without source maps: they would need --enable-source-maps, which slows every cold start. */
export const MINIFY = true;
export const SOURCE_MAP = false;
