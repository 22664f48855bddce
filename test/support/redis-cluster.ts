import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './redis-server';

export interface RedisClusterProcess {
  /** A URL of one node; the cluster client discovers the others. */
  readonly url: string;
  readonly ports: readonly number[];
  /** Stops every node (SIGTERM to each pid) and waits for them to exit. */
  stop(): Promise<void>;
  /** Starts the same nodes again, the same cluster, and waits until it is ok. */
  start(): Promise<void>;
  /** Stops it for good and removes its scratch folder. */
  dispose(): Promise<void>;
}

/**
 * Spawns a three-node Redis Cluster (no replicas, no persistence) on free ports, so the code that
 * runs on MemoryDB or ElastiCache in cluster mode is tested against a real cluster.
 */
export async function spawnRedisCluster(): Promise<RedisClusterProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'chat-proxy-cluster-'));
  const ports: number[] = [];
  while (ports.length < 3) {
    const port = await freeClusterPort();
    if (!ports.includes(port)) ports.push(port);
  }
  const spawnNode = (port: number): ChildProcess =>
    spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'no',
      ],
      { stdio: 'ignore' },
    );
  let children: ChildProcess[] = ports.map(spawnNode);
  const stop = async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      ),
    );
  };
  const dispose = async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  };
  // Each node keeps the cluster's layout in its nodes-<port>.conf, so the same nodes come back
  // as the same cluster (no persistence: empty).
  const start = async () => {
    children = ports.map(spawnNode);
    for (const port of ports) await waitFor(() => clusterOk(port), 20_000);
  };
  try {
    for (const port of ports) await waitFor(() => ping(port), 10_000);
    await promisify(execFile)('redis-cli', [
      '--cluster',
      'create',
      ...ports.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ]);
    for (const port of ports) await waitFor(() => clusterOk(port), 20_000);
  } catch (error) {
    await dispose();
    throw error;
  }
  return { url: `redis://127.0.0.1:${ports[0]}`, ports, stop, start, dispose };
}

/**
 * A free port whose cluster bus port is usable too: Redis listens for its peers on port + 10000,
 * and refuses to start in cluster mode when that is above 65535 (the OS hands out ports up to
 * 60999 here) or, of course, when it is taken.
 */
export async function freeClusterPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 10_000 <= 65_535 && (await isFree(port + 10_000))) return port;
  }
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

async function withNode<T>(port: number, use: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis(port, '127.0.0.1', {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => {});
  try {
    await redis.connect();
    return await use(redis);
  } finally {
    redis.disconnect();
  }
}

const ping = (port: number) => withNode(port, async (redis) => (await redis.ping()) === 'PONG');
const clusterOk = (port: number) =>
  withNode(port, async (redis) => String(await redis.call('CLUSTER', 'INFO')).includes('cluster_state:ok'));

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error('Redis Cluster did not come up');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Keys stored on each node, to check that chats really spread over the cluster. */
export async function keysPerNode(ports: readonly number[]): Promise<number[]> {
  return Promise.all(ports.map((port) => withNode(port, (redis) => redis.dbsize())));
}
