import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './redis-server';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/**
 * An npm script of package.json, `<command> <flags>... <entry>` (`tsx <node flags>... <file>` for
 * ours), taken apart; empty parts for a script there is not.
 */
export function npmScript(name: string): { command: string; flags: string[]; entry: string } {
  const { scripts } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };
  const words = scripts[name]?.split(' ') ?? [];
  const entry = words.length > 1 ? (words.at(-1) ?? '') : '';
  return { command: words[0] ?? '', flags: words.slice(1, -1), entry };
}

/** package.json's dev script taken apart: what `npm run dev` runs, so a test can run the same without npm. */
export function devScript(): { command: string; flags: string[]; entry: string } {
  return npmScript('dev');
}

export interface DevServer {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** Everything it printed so far, stdout and stderr interleaved. */
  output(): string;
  /** Stops it the way its user would (see `how`) and resolves once it has exited. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface DevServerOptions {
  /** The only variables it gets besides PATH and HOME (and PORT, chosen here). */
  readonly env?: Record<string, string>;
  /**
   * `node`: `node --import tsx`, then the dev script's own flags and entry (what `npm run dev`
   * runs, see `devScript`), stopped with SIGTERM to its pid.
   * `npm`: `npm run dev` in its own process group, stopped with SIGINT to that group, as Ctrl-C in
   * a terminal would.
   * @default 'node'
   */
  readonly how?: 'node' | 'npm';
  /** @default 30_000 */
  readonly readyTimeoutMs?: number;
}

async function answersHealth(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/`, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.status === 200;
  } catch {
    return false;
  }
}

/** Starts `local/dev.ts` on a free port and waits until `GET /` answers. */
export async function startDevServer(options: DevServerOptions = {}): Promise<DevServer> {
  const how = options.how ?? 'node';
  const port = await freePort();
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    ...options.env,
    PORT: String(port),
  };
  const dev = devScript();
  if (dev.command !== 'tsx') throw new Error(`package.json's dev script no longer runs tsx: ${dev.command}`);
  const child: ChildProcess =
    how === 'npm'
      ? spawn('npm', ['run', 'dev'], {
          cwd: repoRoot,
          env,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
        })
      : spawn(process.execPath, ['--import', 'tsx', ...dev.flags, dev.entry], {
          cwd: repoRoot,
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`Could not spawn the dev server (${how})`);

  let output = '';
  const collect = (chunk: Buffer) => {
    output += chunk.toString('utf8');
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      if (how === 'npm') process.kill(-pid, 'SIGINT');
      else process.kill(pid, 'SIGTERM');
    }
    const result = await exited;
    // npm can exit before the processes under it; the test owns the whole group it started.
    if (how === 'npm') await endProcessGroup(pid, 10_000);
    return result;
  };

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  while (!(await answersHealth(url))) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`The dev server did not start:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { url, port, pid, output: () => output, stop };
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

async function endProcessGroup(pgid: number, graceMs: number): Promise<void> {
  const deadline = Date.now() + graceMs;
  while (groupAlive(pgid)) {
    if (Date.now() > deadline) {
      process.kill(-pgid, 'SIGKILL');
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
export function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
