import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { type BuildOptions, build } from 'esbuild';
import { routes } from '../functions/routes';
import { bundlingAliases } from '../infra/bundling/lean-ioredis';
import {
  BUNDLE_TARGET,
  EXTERNAL_MODULES,
  MINIFY,
  SOURCE_MAP,
  TOKEN_RANKS_HOOK,
} from '../infra/bundling/options';
import { type Invoke, invoker } from '../test/support/handlers';
import { tempDir } from './lifecycle';
import { repoRoot } from './paths';
import type { Complete } from './turn-overhead';

/** esbuild options that build a function as the stack's NodejsFunction does (infra/bundling/options.ts). */
export function stackBundling(): BuildOptions {
  return {
    bundle: true,
    platform: 'node',
    target: BUNDLE_TARGET,
    format: 'cjs',
    minify: MINIFY,
    sourcemap: SOURCE_MAP,
    external: [...EXTERNAL_MODULES],
    // The lean ioredis and the `debug` stub, as the stack aliases them.
    alias: Object.fromEntries(
      bundlingAliases(repoRoot).aliases.map((alias) => {
        const at = alias.indexOf('=');
        return [alias.slice(0, at), alias.slice(at + 1)];
      }),
    ),
    absWorkingDir: repoRoot,
    logLevel: 'warning',
  };
}

/**
 * Marks `dir` as CommonJS, as NodejsFunction emits its bundles (this repo's package.json says
 * "module"), so Node loads the bundles in it as they load in Lambda.
 */
export function commonJsFolder(dir: string): void {
  writeFileSync(join(dir, 'package.json'), '{"type":"commonjs"}\n');
}

/** A buffered or streamed turn as deployed, and the OpenAI client the direct calls (B) use. */
export interface DeployedTurn {
  /** `POST /{chat_id}/chat`'s handler, from its bundle, invoked as Lambda would. */
  readonly postChat: Invoke;
  /** `complete()` of functions/shared/openai.ts, from a bundle of its own built the same way. */
  readonly complete: Complete;
  /** Bytes of the handler's bundle (index.js). */
  readonly bytes: number;
}

/**
 * Builds `POST /{chat_id}/chat`'s function as the stack does (with the tokenizer's ranks beside
 * it, as its bundling hook writes them) and, for B, the functions' OpenAI client the same way, then
 * loads both into this process: the turn is measured as the code that is deployed, minified and
 * without tsx's per-function helpers. Call it once the functions' environment is set (they read it
 * when loaded) and the awslambda stand-in is installed (test/support/lambda-stream.ts).
 */
export async function loadDeployedTurn(): Promise<DeployedTurn> {
  const route = routes.find(
    (candidate) => candidate.method === 'POST' && candidate.path === '/{chat_id}/chat',
  );
  if (route === undefined) throw new Error('the route table has no POST /{chat_id}/chat');
  const dir = tempDir('turn');
  commonJsFolder(dir);
  const handlerDir = join(dir, 'handler');
  const built = await build({
    ...stackBundling(),
    entryPoints: [join(repoRoot, 'functions', `${route.entry}.ts`)],
    outfile: join(handlerDir, 'index.js'),
    metafile: true,
  });
  if (route.needs.includes('tokenizer')) {
    execFileSync(process.execPath, [TOKEN_RANKS_HOOK, handlerDir]);
  }
  await build({
    ...stackBundling(),
    stdin: {
      contents: "export { complete } from './functions/shared/openai';",
      resolveDir: repoRoot,
      sourcefile: 'direct-call.ts',
      loader: 'ts',
    },
    outfile: join(dir, 'direct', 'index.js'),
  });
  const load = createRequire(join(dir, 'package.json'));
  const { handler } = load('./handler/index.js') as { handler: unknown };
  const direct = load('./direct/index.js') as { complete: Complete };
  const bytes = Object.values(built.metafile?.outputs ?? {}).reduce((sum, output) => sum + output.bytes, 0);
  return { postChat: invoker(handler), complete: direct.complete, bytes };
}
