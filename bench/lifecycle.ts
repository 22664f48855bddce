import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Everything the bench starts (redis-server, the dev server, the OpenAI stand-in, temporary
 * folders, child processes) registers its cleanup here, so it is undone on a normal end, on an
 * error and on Ctrl-C alike.
 */

type Cleanup = { readonly name: string; readonly run: () => Promise<void> | void };

const cleanups: Cleanup[] = [];
let cleaning: Promise<void> | undefined;

/** Registers a cleanup; they run newest first. Returns a function that runs it early (once). */
export function onCleanup(name: string, run: () => Promise<void> | void): () => Promise<void> {
  const entry: Cleanup = { name, run };
  cleanups.push(entry);
  let done: Promise<void> | undefined;
  return () => {
    const index = cleanups.indexOf(entry);
    if (index !== -1) cleanups.splice(index, 1);
    done ??= Promise.resolve(run());
    return done;
  };
}

/** Runs every registered cleanup, newest first; a failing one does not stop the others. */
export function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length > 0) {
      const entry = cleanups.pop();
      if (entry === undefined) break;
      try {
        await Promise.race([
          entry.run(),
          new Promise((resolve) => setTimeout(resolve, 15_000).unref()).then(() => {
            throw new Error('timed out after 15 s');
          }),
        ]);
      } catch (error) {
        console.error(`bench: cleanup "${entry.name}" failed:`, error);
      }
    }
  })();
  return cleaning;
}

/** A temporary folder, removed at cleanup. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `chat-proxy-bench-${prefix}-`));
  onCleanup(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

let interrupted: NodeJS.Signals | undefined;

/** Whether a SIGINT/SIGTERM arrived: long loops check it to stop early. */
export function interruption(): NodeJS.Signals | undefined {
  return interrupted;
}

/** Thrown by `checkInterrupted` so the phases unwind through their own `finally` blocks. */
export class Interrupted extends Error {}

export function checkInterrupted(): void {
  if (interrupted) throw new Interrupted(`interrupted by ${interrupted}`);
}

/**
 * On the first SIGINT/SIGTERM: flag it (loops stop at their next check), clean up and exit 130.
 * One Ctrl-C can arrive several times (the terminal signals the whole group, and the parents pass
 * it on), so repeats right after it are ignored; one more than 3 s later exits at once.
 */
export function installSignalHandlers(): void {
  let first: number | undefined;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      interrupted ??= signal;
      if (first === undefined) {
        first = Date.now();
        console.error(`\nbench: ${signal}, cleaning up`);
        void cleanUp().finally(() => process.exit(130));
      } else if (Date.now() - first > 3000) {
        // Asked again well after the first: the user wants out now.
        process.exit(130);
      }
    });
  }
}
