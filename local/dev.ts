/**
 * `npm run dev`: the API on 127.0.0.1 with the same handlers as the deployed stack, and nothing to
 * set up. Without REDIS_URL it runs its own redis-server (data kept under the data folder); without
 * OPENAI_API_KEY it answers with the offline stand-in model; without CHAT_PROXY_API_KEYS it makes an
 * API key and keeps it for the next start.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join, relative, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { ConfigError, loadLimits, loadOpenAiConfig, loadRedisConfig } from '../functions/shared/config';
import { freePort } from './free-port';
import { startOpenAiStandIn } from './openai-stand-in';
import { createLocalServer } from './server';

/** A start-up problem the user can fix: printed as one line, no stack. */
class StartupError extends Error {}

function setting(name: string): string | undefined {
  const value = process.env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

const cleanups: Array<() => Promise<void>> = [];
let stopping: Promise<never> | undefined;

/** Runs the cleanups newest first (server, then OpenAI stand-in, then Redis) and exits. */
function shutdown(exitCode: number): Promise<never> {
  stopping ??= (async () => {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        console.error('chat-proxy: error while stopping:', error);
      }
    }
    process.exit(exitCode);
  })();
  return stopping;
}

// A repeated signal changes nothing: stopping is bounded anyway, and tsx passes a Ctrl-C on to us
// a second time when we are slow to acknowledge the first.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    console.log(`\nchat-proxy: ${signal}, stopping`);
    void shutdown(0);
  });
}

function displayPath(path: string): string {
  const shown = relative(process.cwd(), path);
  return shown === '' || shown.startsWith('..') ? path : shown;
}

interface ApiKeys {
  readonly keys: string[];
  readonly origin: string;
}

const KEY = /^[\x21-\x7e]+$/;

function loadApiKeys(dataDir: string): ApiKeys {
  const listed = setting('CHAT_PROXY_API_KEYS');
  if (listed !== undefined) {
    const keys = listed
      .split(',')
      .map((key) => key.trim())
      .filter((key) => key !== '');
    if (keys.length === 0 || !keys.every((key) => KEY.test(key))) {
      throw new StartupError('CHAT_PROXY_API_KEYS must be a comma-separated list of keys without spaces');
    }
    return { keys, origin: 'from CHAT_PROXY_API_KEYS' };
  }
  const file = join(dataDir, 'api-key');
  if (existsSync(file)) {
    const saved = readFileSync(file, 'utf8').trim();
    if (!KEY.test(saved))
      throw new StartupError(`${file} holds no valid API key: delete it to get a new one`);
    return { keys: [saved], origin: `saved in ${displayPath(file)}` };
  }
  const key = `cp_${randomBytes(16).toString('hex')}`;
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  return { keys: [key], origin: `new, saved in ${displayPath(file)}` };
}

/** The tenant of a key, as API Gateway's key id: Redis never holds the key itself. */
function tenantOf(key: string): string {
  return `local-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

async function redisAnswers(url: string): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => {});
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/** Runs redis-server with AOF on under `<dataDir>/redis`, so chats survive a restart. */
async function startRedis(dataDir: string): Promise<{ url: string; description: string }> {
  const dir = join(dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--save', ''],
    // In our process group on purpose: a Ctrl-C stops it even if we are killed before our cleanup.
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output: string[] = [];
  const remember = (chunk: Buffer) => output.push(...chunk.toString('utf8').trimEnd().split('\n'));
  child.stdout?.on('data', remember);
  child.stderr?.on('data', remember);
  const lastOutput = () => output.slice(-5).join('\n');

  await new Promise<void>((resolveSpawn, reject) => {
    child.once('spawn', () => resolveSpawn());
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'ENOENT'
          ? new StartupError(
              'redis-server is not on PATH: install Redis (apt-get install redis-server, brew install redis) or set REDIS_URL',
            )
          : error,
      ),
    );
  });

  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
  // A last resort when the process ends without a graceful stop; redis-server still writes its AOF.
  process.once('exit', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  });
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  });

  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  while (!(await redisAnswers(url))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new StartupError(`redis-server did not start:\n${lastOutput()}`);
    }
    await new Promise((wait) => setTimeout(wait, 50));
  }
  child.once('exit', (code, signal) => {
    if (stopping) return;
    if (code === 0) {
      console.log('chat-proxy: redis-server stopped, stopping too');
      void shutdown(0);
      return;
    }
    console.error(
      `chat-proxy: redis-server exited unexpectedly (${signal ?? `code ${code}`}):\n${lastOutput()}`,
    );
    void shutdown(1);
  });
  return { url, description: `redis-server on 127.0.0.1:${port}, data in ${displayPath(dir)} (AOF)` };
}

function describeRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `REDIS_URL (${parsed.protocol}//${parsed.host})`;
  } catch {
    return 'REDIS_URL';
  }
}

function box(lines: string[]): string {
  const width = Math.max(...lines.map((line) => line.length));
  const border = '─'.repeat(width + 2);
  return [`┌${border}┐`, ...lines.map((line) => `│ ${line.padEnd(width)} │`), `└${border}┘`].join('\n');
}

function offlineBanner(ignoredBaseUrl: boolean): string {
  const lines = [
    'OFFLINE MODE: OPENAI_API_KEY is not set.',
    '',
    'Chat, image and moderation replies come from a DETERMINISTIC OFFLINE STAND-IN',
    'model that echoes your message. Nothing is sent to OpenAI.',
    '',
    'To use OpenAI:                 OPENAI_API_KEY=sk-... npm run dev',
    'Any OpenAI-compatible server:  add OPENAI_BASE_URL=http://host:port/v1',
  ];
  if (ignoredBaseUrl) lines.push('', 'OPENAI_BASE_URL is set but ignored: it needs OPENAI_API_KEY as well.');
  const text = box(lines);
  return process.stdout.isTTY ? `\x1b[1;33m${text}\x1b[0m` : text;
}

async function startOpenAi(): Promise<string> {
  if (setting('OPENAI_API_KEY') !== undefined) {
    return `OpenAI at ${setting('OPENAI_BASE_URL') ?? 'https://api.openai.com/v1'}`;
  }
  console.log(offlineBanner(setting('OPENAI_BASE_URL') !== undefined));
  const standIn = await startOpenAiStandIn();
  cleanups.push(() => standIn.close());
  process.env.OPENAI_BASE_URL = standIn.baseURL;
  process.env.OPENAI_API_KEY = 'sk-offline-stand-in';
  return `offline stand-in at ${standIn.baseURL}`;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolveListen, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'EADDRINUSE'
          ? new StartupError(`Port ${port} on ${host} is already in use: set PORT to another one`)
          : error,
      ),
    );
    server.listen(port, host, () => {
      const address = server.address();
      resolveListen(typeof address === 'object' && address ? address.port : port);
    });
  });
}

async function main(): Promise<void> {
  const dataDir = resolve(setting('CHAT_PROXY_DATA_DIR') ?? '.data');
  const host = setting('HOST') ?? '127.0.0.1';
  const port = Number(setting('PORT') ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new StartupError(`PORT must be a port number, got "${process.env.PORT}"`);
  }

  const { keys, origin } = loadApiKeys(dataDir);

  const givenRedisUrl = setting('REDIS_URL');
  const redis = givenRedisUrl
    ? { url: givenRedisUrl, description: describeRedisUrl(givenRedisUrl) }
    : await startRedis(dataDir);
  process.env.REDIS_URL = redis.url;
  // Locally no secret is read from Secrets Manager, so the SDK's Node.js version notice is noise.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // The server prints a line per request; the functions' JSON logs and EMF metrics are for
  // CloudWatch. POWERTOOLS_LOG_LEVEL=INFO shows the logs here too.
  process.env.POWERTOOLS_LOG_LEVEL ??= 'WARN';
  process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
  const openAi = await startOpenAi();

  // The handlers read the same settings when first imported; reading them now turns a bad value
  // into a start-up error instead of a 500 on the first request.
  loadLimits();
  loadRedisConfig();
  const { model } = loadOpenAiConfig();

  const server = createLocalServer({ apiKeys: new Map(keys.map((key) => [key, tenantOf(key)])) });
  const actualPort = await listen(server, port, host);
  cleanups.push(
    () =>
      new Promise<void>((resolveClose) => {
        server.close(() => resolveClose());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 2000).unref();
      }),
  );

  const shownHost =
    host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${shownHost}:${actualPort}`;
  const [firstKey] = keys;
  console.log(
    [
      `chat-proxy local API listening on ${url}`,
      `  Redis:    ${redis.description}`,
      `  OpenAI:   ${openAi}, model ${model}`,
      `  API key${keys.length > 1 ? 's' : ''}: ${keys.join(', ')} (${origin})`,
      '',
      'Try it:',
      `  curl -X POST -H "Content-Type: application/json" -H "x-api-key: ${firstKey}" \\`,
      `    --data '{"content": "Hello!"}' ${url}/my-chat/chat`,
      `  curl -H "x-api-key: ${firstKey}" ${url}/my-chat/chat`,
      '',
    ].join('\n'),
  );
}

main().catch((error: unknown) => {
  if (error instanceof StartupError || error instanceof ConfigError) {
    console.error(`chat-proxy: ${error.message}`);
  } else {
    console.error('chat-proxy: could not start:', error);
  }
  void shutdown(1);
});
