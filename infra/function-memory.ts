/**
 * Every route's function memory, and the V8 heap the Lambda runtime gives a function of that size.
 * Kept free of imports: the bench starts its processes with these flags before it loads anything.
 */

/** Memory of every route's function, in MB (infra/constructs/route-function.ts). */
export const FUNCTION_MEMORY_MB = 256;

/**
 * The heap flags the Lambda Node.js runtime's bootstrap starts `node` with for a function of
 * `memoryMb`: a tenth of the memory for the young generation (`--max-semi-space-size` is half of
 * it, in whole MB), the rest for the old one. V8 rounds the semi-space up to a power of two (a
 * 256 MB function gets 16 MB). Node's own defaults scale with the machine's memory instead (Node 24
 * on a 24 GB machine takes 64 MB semi-spaces), so a process that stands in for a function in a
 * measurement runs with these.
 */
export function lambdaHeapFlags(memoryMb: number): string[] {
  const newSpace = Math.floor(memoryMb / 10);
  return [`--max-semi-space-size=${Math.floor(newSpace / 2)}`, `--max-old-space-size=${memoryMb - newSpace}`];
}
