import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { lambdaHeapFlags } from '../../infra/function-memory';

describe('lambdaHeapFlags', () => {
  it.each([
    // The runtime's bootstrap: new space = memory / 10, semi-space = new space / 2, old space = the
    // rest, each in whole MB (integer division).
    [128, ['--max-semi-space-size=6', '--max-old-space-size=116']],
    [256, ['--max-semi-space-size=12', '--max-old-space-size=231']],
    [1024, ['--max-semi-space-size=51', '--max-old-space-size=922']],
    [10240, ['--max-semi-space-size=512', '--max-old-space-size=9216']],
  ])('gives a %i MB function the heap flags the Lambda runtime starts node with', (memoryMb, flags) => {
    expect(lambdaHeapFlags(memoryMb)).toEqual(flags);
  });

  it('makes flags that node accepts', () => {
    const out = execFileSync(
      process.execPath,
      [
        ...lambdaHeapFlags(256),
        '-p',
        'Math.round(require("v8").getHeapStatistics().heap_size_limit / 2 ** 20)',
      ],
      { encoding: 'utf8' },
    );
    // 231 MB of old space and a young generation of three semi-spaces of 12 MB, which V8 rounds up
    // to 16 (279 MB on Node 20 and 24), not Node's default for this machine (gigabytes).
    expect([231 + 3 * 12, 231 + 3 * 16]).toContain(Number(out.trim()));
  });
});
