// Bundling hook: writes the o200k_base merge ranks beside a function's bundle as plain JSON, which
// the function loads in the background at start-up (functions/shared/tokens.ts) instead of
// parsing 2 MB of JavaScript inside its bundle at import.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [outputDir] = process.argv.slice(2);
if (!outputDir) throw new Error('usage: node write-token-ranks.mjs <output dir>');
const { default: ranks } = await import('gpt-tokenizer/bpeRanks/o200k_base');
writeFileSync(join(outputDir, 'o200k_base.json'), JSON.stringify(ranks));
