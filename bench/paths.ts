import { join } from 'node:path';

/** The repository's root folder (the bench's parent). */
export const repoRoot = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
