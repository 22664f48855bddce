import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    setupFiles: ['test/support/setup-env.ts'],
    testTimeout: 20_000,
    hookTimeout: 60_000,
    // Infra tests synthesize the stack, which is CPU-heavy: two workers suit the 2-core machines.
    maxWorkers: 2,
  },
});
