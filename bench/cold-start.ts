import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { join, relative } from 'node:path';
import { type BuildOptions, build, type Metafile } from 'esbuild';
import { type RouteDefinition, routes } from '../functions/routes';
import { bundlingAliases, leanCopyPackage } from '../infra/bundling/lean-ioredis';
import { commonJsFolder, stackBundling } from './bundles';
import { checkInterrupted, onCleanup, tempDir } from './lifecycle';
import { repoRoot } from './paths';
import { median } from './stats';

/**
 * Cold start of each route's deployed bundle: `cdk synth`, then for every function of the
 * template its bundle size, what it requires at run time, and the time to import it (and so build
 * its module-scope clients) in a fresh Node process with `@aws-sdk/*` resolving to this repo's
 * copy, as the Lambda runtime resolves it to the copy it ships.
 */

export type Category = 'health' | 'chat/img' | 'other';

export interface FunctionBundle {
  readonly logicalId: string;
  readonly method: string;
  readonly path: string;
  readonly route: RouteDefinition | undefined;
  readonly category: Category;
  readonly assetDir: string;
  readonly indexBytes: number;
  readonly assetBytes: number;
  readonly assetFiles: string[];
  readonly environment: Record<string, string>;
  readonly nodeOptions: string | undefined;
  readonly externals: string[];
  readonly builtins: string[];
  readonly memorySize: number | undefined;
}

export interface ImportTiming {
  /** ms to `require` the bundle, median and range. */
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** ms from the require to the event loop first going idle (work the import started in the background). */
  readonly settledMedian: number | undefined;
  /** ms from process start to the require (Node's own start-up), median. */
  readonly bootMedian: number;
  readonly runs: number;
}

export interface ColdStartResult {
  readonly synth: { ran: boolean; ok: boolean; seconds: number; note?: string };
  readonly templatePath: string;
  readonly functions: (FunctionBundle & {
    readonly timing: ImportTiming;
    /** Why the bundle could not be imported, if it could not. */
    readonly failure: string | undefined;
    readonly bundled: BundledPackage[];
    readonly replicatedBytes: number;
  })[];
  /** Import time of each package the functions import, bundled alone as the stack bundles. */
  readonly packages: {
    specifier: string;
    timing: ImportTiming;
    failure: string | undefined;
    bytes: number;
  }[];
  readonly nodeVersion: string;
}

export interface BundledPackage {
  readonly name: string;
  readonly bytes: number;
}

interface TemplateResource {
  readonly Type: string;
  readonly Properties?: {
    readonly Description?: string;
    readonly Environment?: { readonly Variables?: Record<string, unknown> };
    readonly MemorySize?: number;
  };
  readonly Metadata?: Record<string, unknown>;
}

function runCommand(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
  timeoutMs: number,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    const stop = onCleanup(`stop ${command}`, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    });
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      void stop();
      resolve({ code, output });
    });
  });
}

/** `cdk synth` into cdk.out, unless told not to and cdk.out already holds a template. */
async function synthesize(
  env: NodeJS.ProcessEnv,
  skip: boolean,
  templatePath: string,
): Promise<ColdStartResult['synth']> {
  if (skip && existsSync(templatePath)) {
    return {
      ran: false,
      ok: true,
      seconds: 0,
      note: `--no-synth: used the existing ${relative(repoRoot, templatePath)}`,
    };
  }
  const started = performance.now();
  const { code, output } = await runCommand(
    'npx',
    // The default stack, whatever name cdk.json may give a deployment: the functions are the same.
    ['cdk', 'synth', '--no-notices', '-q', '-c', 'stackName=ChatProxy'],
    {
      ...env,
      AWS_REGION: 'us-east-1',
      CDK_DISABLE_CLI_TELEMETRY: 'true',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    },
    repoRoot,
    300_000,
  );
  const seconds = (performance.now() - started) / 1000;
  if (code === 0) return { ran: true, ok: true, seconds };
  checkInterrupted();
  if (!existsSync(templatePath)) throw new Error(`cdk synth failed (exit ${code}):\n${output.slice(-3000)}`);
  const stamp = statSync(templatePath).mtime.toISOString();
  console.error(
    `bench: cdk synth failed (exit ${code}); measuring the existing cdk.out from ${stamp}:\n${output.slice(-1500)}`,
  );
  return {
    ran: true,
    ok: false,
    seconds,
    note: `cdk synth FAILED (exit ${code}: ${output.trim().split('\n').slice(-3).join(' / ').slice(0, 300)}); measured the stale cdk.out of ${stamp}`,
  };
}

function folderBytes(dir: string): { bytes: number; files: string[] } {
  let bytes = 0;
  const files: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    bytes += statSync(path).size;
    files.push(relative(dir, path));
  }
  return { bytes, files: files.sort() };
}

/**
 * What a bundle loads at run time: Node built-ins, and packages left out of the bundle, whether
 * `require`d or loaded with a dynamic `import()` (marked so).
 */
export function runtimeRequires(source: string): { externals: string[]; builtins: string[] } {
  const found = new Map<string, string>();
  for (const match of source.matchAll(/\brequire\(\s*["'`]([^"'`]+)["'`]\s*\)/g)) {
    if (match[1] !== undefined) found.set(match[1], match[1]);
  }
  for (const match of source.matchAll(/\bimport\(\s*["'`]([^"'`]+)["'`]\s*\)/g)) {
    if (match[1] !== undefined && !found.has(match[1])) found.set(match[1], `${match[1]} (import())`);
  }
  const names = [...found.keys()].sort();
  return {
    externals: names.filter((name) => !isBuiltin(name)).map((name) => found.get(name) ?? name),
    builtins: names.filter((name) => isBuiltin(name)),
  };
}

/** The module names of `runtimeRequires().externals`, without the import() mark. */
export function externalNames(externals: readonly string[]): string[] {
  return externals.map((name) => name.replace(/ \(import\(\)\)$/, ''));
}

function categoryOf(route: RouteDefinition | undefined): Category {
  if (route?.entry === 'health') return 'health';
  if (route?.body === 'chat' || route?.body === 'image') return 'chat/img';
  return 'other';
}

/** The deployed environment of a function, with a dummy ARN wherever the template has a reference. */
function deployedEnvironment(variables: Record<string, unknown>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(variables)) {
    env[name] =
      typeof value === 'string' || typeof value === 'number'
        ? String(value)
        : `arn:aws:secretsmanager:us-east-1:123456789012:secret:bench-${name.toLowerCase()}-AbCdEf`;
  }
  return env;
}

function readBundles(cdkOut: string, templatePath: string): FunctionBundle[] {
  const template = JSON.parse(readFileSync(templatePath, 'utf8')) as {
    Resources: Record<string, TemplateResource>;
  };
  const bundles: FunctionBundle[] = [];
  for (const [logicalId, resource] of Object.entries(template.Resources)) {
    if (resource.Type !== 'AWS::Lambda::Function') continue;
    const description = resource.Properties?.Description ?? '';
    const match = /^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\S+):/.exec(description);
    const assetPath = resource.Metadata?.['aws:asset:path'];
    if (!match || typeof assetPath !== 'string') continue;
    const [, method = '', path = ''] = match;
    const assetDir = join(cdkOut, assetPath);
    const indexPath = join(assetDir, 'index.js');
    if (!existsSync(indexPath)) throw new Error(`${logicalId}: no index.js in ${assetDir}`);
    const route = routes.find((candidate) => candidate.method === method && candidate.path === path);
    const environment = deployedEnvironment(resource.Properties?.Environment?.Variables ?? {});
    const { bytes, files } = folderBytes(assetDir);
    bundles.push({
      logicalId,
      method,
      path,
      route,
      category: categoryOf(route),
      assetDir,
      indexBytes: statSync(indexPath).size,
      assetBytes: bytes,
      assetFiles: files,
      environment,
      nodeOptions: environment.NODE_OPTIONS,
      ...runtimeRequires(readFileSync(indexPath, 'utf8')),
      memorySize: resource.Properties?.MemorySize,
    });
  }
  if (bundles.length === 0) throw new Error(`${templatePath}: no route functions found`);
  return bundles;
}

/**
 * The probe run by a fresh `node -e`: installs what the Lambda runtime provides before it loads a
 * handler (the `awslambda` global of streaming handlers), then times the `require`, and the time
 * until the event loop first runs dry (anything the import started in the background, such as a
 * tokenizer loading its ranks, has finished by then).
 */
const PROBE = `
const { performance } = require('node:perf_hooks');
const runtime = (globalThis.awslambda ??= {});
runtime.streamifyResponse ??= (handler) => handler;
runtime.HttpResponseStream ??= { from: (stream) => stream };
const boot = performance.now();
require(process.env.BENCH_IMPORT);
const imported = performance.now();
const report = (settled) => {
  process.stdout.write(JSON.stringify({ boot, import: imported - boot, settled: settled === undefined ? null : settled - boot }));
  process.exit(0);
};
process.once('beforeExit', () => report(performance.now()));
setTimeout(() => report(undefined), 10000).unref();
`;

interface ProbeRun {
  readonly boot: number;
  readonly import: number;
  readonly settled: number | null;
}

async function probe(dir: string, file: string, env: Record<string, string>): Promise<ProbeRun> {
  const { code, output } = await runCommand(
    process.execPath,
    ['-e', PROBE],
    { PATH: process.env.PATH ?? '', ...env, BENCH_IMPORT: join(dir, file) },
    dir,
    60_000,
  );
  const line = output.trim().split('\n').at(-1) ?? '';
  if (code !== 0 || !line.startsWith('{'))
    throw new Error(`importing ${join(dir, file)} failed (exit ${code}):\n${output.slice(-2000)}`);
  return JSON.parse(line) as ProbeRun;
}

function summarizeRuns(runs: ProbeRun[]): ImportTiming {
  if (runs.length === 0) {
    return {
      median: Number.NaN,
      min: Number.NaN,
      max: Number.NaN,
      settledMedian: undefined,
      bootMedian: Number.NaN,
      runs: 0,
    };
  }
  const imports = runs.map((run) => run.import);
  const settled = runs.map((run) => run.settled).filter((value): value is number => value !== null);
  return {
    median: median(imports),
    min: Math.min(...imports),
    max: Math.max(...imports),
    settledMedian: settled.length === runs.length ? median(settled) : undefined,
    bootMedian: median(runs.map((run) => run.boot)),
    runs: runs.length,
  };
}

/**
 * The stack's bundling options, for esbuild's metafile. The tokenizer's ranks are bundled here
 * (only `@aws-sdk` left out), so that importing the package alone measures them.
 */
const BUNDLING: BuildOptions = {
  ...stackBundling(),
  external: ['@aws-sdk/*'],
  write: false,
  metafile: true,
  logLevel: 'silent',
};

function metafileOf(result: { metafile?: Metafile }): Metafile {
  if (result.metafile === undefined) throw new Error('esbuild gave no metafile');
  return result.metafile;
}

/** A CommonJS package.json and node_modules/@aws-sdk linked to this repo's, as /var/task sees the runtime's. */
function asTaskFolder(dir: string): void {
  commonJsFolder(dir);
  mkdirSync(join(dir, 'node_modules'), { recursive: true });
  symlinkSync(join(repoRoot, 'node_modules', '@aws-sdk'), join(dir, 'node_modules', '@aws-sdk'), 'dir');
}

function packageOf(input: string): string {
  // The lean copies and the `debug` stub the stack aliases in (lean-ioredis.ts).
  const lean = leanCopyPackage(input);
  if (lean !== undefined) return lean;
  if (input === 'infra/bundling/no-debug.cjs') return 'debug (stub)';
  const index = input.lastIndexOf('node_modules/');
  if (index === -1) return input.startsWith('functions/') ? 'functions/ (own code)' : input;
  const rest = input.slice(index + 'node_modules/'.length).split('/');
  return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : (rest[0] ?? input);
}

/**
 * A route's bundle rebuilt with the stack's options, to see which packages its bytes come from.
 * What the deployed bundle requires at run time was left out of it, so it is left out here too.
 */
async function bundledPackages(
  entry: string,
  externals: readonly string[],
): Promise<{ packages: BundledPackage[]; bytes: number }> {
  const result = await build({
    ...BUNDLING,
    external: [...(BUNDLING.external ?? []), ...externals],
    entryPoints: [join(repoRoot, 'functions', `${entry}.ts`)],
    absWorkingDir: repoRoot,
    outfile: 'out.js',
  });
  const byPackage = new Map<string, number>();
  let bytes = 0;
  for (const output of Object.values(metafileOf(result).outputs)) {
    bytes += output.bytes;
    for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
      const name = packageOf(input);
      byPackage.set(name, (byPackage.get(name) ?? 0) + bytesInOutput);
    }
  }
  const packages = [...byPackage]
    .map(([name, size]) => ({ name, bytes: size }))
    .filter((item) => item.bytes > 0)
    .sort((x, y) => y.bytes - x.bytes);
  return { packages, bytes };
}

/** The packages the functions import (not type-only), as written in functions/**.ts. */
function importedPackages(): string[] {
  const found = new Set<string>();
  const sources = readdirSync(join(repoRoot, 'functions'), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => readFileSync(join(entry.parentPath, entry.name), 'utf8'));
  for (const source of sources) {
    for (const match of source.matchAll(/^\s*import\s+(?!type\s)[^;]*?from\s+'([^'.][^']*)'/gm))
      found.add(match[1] ?? '');
    for (const match of source.matchAll(/\bimport\(\s*'([^'.][^']*)'\s*\)/g)) found.add(match[1] ?? '');
  }
  return [...found].filter((name) => name !== '' && !isBuiltin(name) && name !== 'aws-lambda').sort();
}

export async function measureColdStart(options: {
  synthEnv: NodeJS.ProcessEnv;
  skipSynth: boolean;
  runs: number;
  packageRuns: number;
}): Promise<ColdStartResult> {
  const cdkOut = join(repoRoot, 'cdk.out');
  const templatePath = join(cdkOut, 'ChatProxy.template.json');
  const synthesized = await synthesize(options.synthEnv, options.skipSynth, templatePath);
  // Bundled without the lean ioredis (infra/bundling/lean-ioredis.ts): the report says so.
  const { warning } = bundlingAliases(repoRoot);
  const synth = warning
    ? { ...synthesized, note: `${synthesized.note ?? ''} Bundling warning: ${warning}`.trim() }
    : synthesized;
  checkInterrupted();
  const bundles = readBundles(cdkOut, templatePath);

  const root = tempDir('cold');
  const targets: { dir: string; file: string; env: Record<string, string> }[] = bundles.map((bundle) => {
    const dir = join(root, bundle.logicalId);
    cpSync(bundle.assetDir, dir, { recursive: true });
    asTaskFolder(dir);
    return { dir, file: 'index.js', env: lambdaEnvironment(bundle, dir) };
  });

  // Each package imported alone, bundled the way the stack bundles (and @aws-sdk left external).
  const specifiers = importedPackages();
  const packageTargets: { dir: string; file: string; env: Record<string, string>; bytes: number }[] = [];
  for (const [index, specifier] of specifiers.entries()) {
    const dir = join(root, `package-${index}`);
    const result = await build({
      ...BUNDLING,
      stdin: { contents: `require(${JSON.stringify(specifier)});`, resolveDir: repoRoot, loader: 'js' },
      absWorkingDir: repoRoot,
      outfile: join(dir, 'index.js'),
      write: true,
    });
    asTaskFolder(dir);
    const bytes = Object.values(metafileOf(result).outputs).reduce((sum, output) => sum + output.bytes, 0);
    packageTargets.push({
      dir,
      file: 'index.js',
      env: { AWS_REGION: 'us-east-1', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      bytes,
    });
  }

  // One untimed run each (file cache), then rounds over all targets, so drift spreads evenly. A
  // bundle that fails to load is reported as such, not retried.
  const all = [...targets, ...packageTargets];
  const runs: ProbeRun[][] = all.map(() => []);
  const failures: (string | undefined)[] = all.map(() => undefined);
  const attempt = async (index: number, record: boolean) => {
    const target = all[index];
    if (target === undefined || failures[index] !== undefined) return;
    try {
      const run = await probe(target.dir, target.file, target.env);
      if (record) runs[index]?.push(run);
    } catch (error) {
      failures[index] = error instanceof Error ? error.message : String(error);
    }
  };
  for (let index = 0; index < all.length; index += 1) await attempt(index, false);
  const rounds = Math.max(options.runs, options.packageRuns);
  for (let round = 0; round < rounds; round += 1) {
    for (let index = 0; index < all.length; index += 1) {
      checkInterrupted();
      if (round < (index < targets.length ? options.runs : options.packageRuns)) await attempt(index, true);
    }
  }

  const functions = [];
  for (const [index, bundle] of bundles.entries()) {
    const replicated = bundle.route
      ? await bundledPackages(bundle.route.entry, externalNames(bundle.externals))
      : { packages: [], bytes: 0 };
    functions.push({
      ...bundle,
      timing: summarizeRuns(runs[index] ?? []),
      failure: failures[index],
      bundled: replicated.packages,
      replicatedBytes: replicated.bytes,
    });
  }
  return {
    synth,
    templatePath: relative(repoRoot, templatePath),
    functions,
    packages: specifiers.map((specifier, i) => ({
      specifier,
      timing: summarizeRuns(runs[targets.length + i] ?? []),
      failure: failures[targets.length + i],
      bytes: packageTargets[i]?.bytes ?? 0,
    })),
    nodeVersion: process.version,
  };
}

/** What the Lambda runtime sets, plus the function's own environment from the template. */
function lambdaEnvironment(bundle: FunctionBundle, dir: string): Record<string, string> {
  return {
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x',
    AWS_LAMBDA_FUNCTION_NAME: `ChatProxy-${bundle.logicalId}`,
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(bundle.memorySize ?? 128),
    AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/ChatProxy-${bundle.logicalId}`,
    AWS_LAMBDA_LOG_STREAM_NAME: 'bench',
    LAMBDA_TASK_ROOT: dir,
    TZ: ':UTC',
    // The runtime ships a Node.js the SDK supports; here it would only print a notice.
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    // Functions without these in their template (never the deployed ones) still load.
    OPENAI_MODEL: 'gpt-4.1-mini',
    ...bundle.environment,
  };
}
