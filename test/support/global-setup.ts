import type { TestProject } from 'vitest/node';
import { spawnRedisServer } from './redis-server';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

/** One Redis for the whole run: REDIS_URL when given, else a redis-server of our own. */
export default async function setup(project: TestProject) {
  const given = process.env.REDIS_URL;
  if (given) {
    project.provide('redisUrl', given);
    return;
  }
  const redis = await spawnRedisServer();
  project.provide('redisUrl', redis.url);
  return () => redis.dispose();
}
