/**
 * `npm run bench` (package.json: `tsx bench/run.ts`). The bench's process stands in for a chat
 * function, so it runs with the heap the Lambda runtime gives one (infra/function-memory.ts), and the
 * memory measurement needs `global.gc`: without those flags this re-runs itself as
 * `node --expose-gc <heap flags> --import tsx bench/run.ts`, passing the arguments on and waiting
 * for it; that run makes `ioredis` the bundles' lean copy (local/lean-ioredis.ts) and starts
 * bench/main.ts. Options: `--quick` (small samples, RESULTS.md left
 * alone), `--no-synth` (measure the existing cdk.out).
 *
 * The bench's stderr passes through here so that a line repeated verbatim (a handler writing the
 * same warning on every turn) is shown three times and then counted, not printed ten thousand
 * times; RESULTS.md reports what the handlers write per turn.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { FUNCTION_MEMORY_MB, lambdaHeapFlags } from '../infra/function-memory';

const SHOWN = 3;

const NODE_FLAGS = ['--expose-gc', ...lambdaHeapFlags(FUNCTION_MEMORY_MB)];

if (NODE_FLAGS.every((flag) => process.execArgv.includes(flag))) {
  // The lean ioredis first, so that every import of `ioredis` after it gets the copy.
  await import('../local/lean-ioredis');
  await import('./main');
} else {
  const run = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...NODE_FLAGS, '--import', 'tsx', run, ...process.argv.slice(2)], {
    stdio: ['inherit', 'inherit', 'pipe'],
  });
  const seen = new Map<string, number>();
  const lines = child.stderr
    ? createInterface({ input: child.stderr, crlfDelay: Number.POSITIVE_INFINITY })
    : undefined;
  lines?.on('line', (line) => {
    const count = (seen.get(line) ?? 0) + 1;
    if (seen.size < 1000 || seen.has(line)) seen.set(line, count);
    if (count <= SHOWN) process.stderr.write(`${line}\n`);
    if (count === SHOWN)
      process.stderr.write('[bench] (this line repeats; further copies are counted, not shown)\n');
  });
  // Ctrl-C reaches the child too (same process group); a signal sent to this process alone is
  // passed on. Either way this process stays until the child has cleaned up and exited.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    });
  }
  child.once('close', (code, signal) => {
    for (const [line, count] of seen) {
      if (count > SHOWN)
        process.stderr.write(`[bench] ${count - SHOWN} more copies of: ${line.slice(0, 200)}\n`);
    }
    process.exit(code ?? (signal === 'SIGINT' ? 130 : 1));
  });
}
