import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../../local/free-port';

export { freePort };

export interface RedisServerProcess {
  readonly url: string;
  readonly port: number;
  /** Stops the server (SIGTERM to its pid) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** Stops it for good and removes its scratch folder. */
  dispose(): Promise<void>;
}

async function waitUntilReady(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => {});
    try {
      await probe.connect();
      await probe.ping();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      probe.disconnect();
    }
  }
}

/**
 * Spawns a throwaway `redis-server` (no persistence) on a free port. Tests never touch the
 * machine's own Redis unless REDIS_URL says so.
 */
export async function spawnRedisServer(options: { password?: string } = {}): Promise<RedisServerProcess> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'chat-proxy-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;

  const start = async () => {
    const started = spawn(
      'redis-server',
      [
        ...['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
        ...(options.password ? ['--requirepass', options.password] : []),
      ],
      { stdio: 'ignore' },
    );
    child = started;
    await new Promise<void>((resolve, reject) => {
      started.once('error', (error) =>
        reject(new Error(`Could not start redis-server (is it on PATH?): ${error.message}`)),
      );
      started.once('spawn', () => resolve());
    });
    await waitUntilReady(
      options.password ? url.replace('redis://', `redis://:${options.password}@`) : url,
      10_000,
    );
  };

  const stop = async () => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill('SIGTERM');
    await exited;
  };

  await start();
  return {
    url,
    port,
    start,
    stop,
    dispose: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
