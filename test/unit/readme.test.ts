import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { routes } from '../../functions/routes';
import { npmScript } from '../support/dev-server';

const readRepoFile = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

const readme = readRepoFile('README.md');

/** The header of the route table in the API reference; Biome pads the cells, so they are compared trimmed. */
const ROUTE_TABLE_HEADER = ['Method', 'Path', 'API key', 'Body (JSON)', 'Answer'];

interface DocumentedRoute {
  readonly method: string;
  readonly path: string;
  readonly apiKeyRequired: boolean;
}

/** The trimmed cells of a Markdown table row. */
function cellsOf(line: string): string[] {
  return line
    .trim()
    .replace(/^\||\|$/g, '')
    .split('|')
    .map((cell) => cell.trim());
}

/** The rows of the route table: the lines after its header and separator, up to the table's end. */
function routeTableRows(): string[] {
  const lines = readme.split('\n');
  const start = lines.findIndex(
    (line) => line.startsWith('|') && cellsOf(line).join('|') === ROUTE_TABLE_HEADER.join('|'),
  );
  if (start === -1) return [];
  const rows: string[] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line);
  }
  return rows;
}

/** Parses rows such as "| `GET` | `/system` | yes | none | ... |". */
function documentedRoutes(): DocumentedRoute[] {
  return routeTableRows().map((row) => {
    const [method, path, apiKey] = cellsOf(row);
    const methodMatch = /^`([A-Z]+)`$/.exec(method ?? '');
    const pathMatch = /^`(\/[^`]*)`$/.exec(path ?? '');
    if (!methodMatch?.[1] || !pathMatch?.[1] || (apiKey !== 'yes' && apiKey !== 'no')) {
      throw new Error(`Route table row not in the "| \`METHOD\` | \`/path\` | yes/no | ..." format: ${row}`);
    }
    return { method: methodMatch[1], path: pathMatch[1], apiKeyRequired: apiKey === 'yes' };
  });
}

/** A quoted UPPER_SNAKE name, as config.ts passes each variable's name to its readers. */
const QUOTED_ENV_NAME = /['"]([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)['"]/g;

function quotedEnvNames(source: string): string[] {
  return [...new Set([...source.matchAll(QUOTED_ENV_NAME)].map((m) => m[1] ?? ''))];
}

describe('README.md', () => {
  describe('API reference route table', () => {
    it('has a route table', () => {
      expect(routeTableRows().length).toBeGreaterThan(0);
    });

    it('lists every route of the route table with its method, path and API key need', () => {
      const documented = documentedRoutes();

      for (const route of routes) {
        expect(documented, `${route.method} ${route.path}`).toContainEqual({
          method: route.method,
          path: route.path,
          apiKeyRequired: route.apiKeyRequired,
        });
      }
    });

    it('lists no route that the route table does not have, and none twice', () => {
      const known = new Set(routes.map((route) => `${route.method} ${route.path}`));
      const documented = documentedRoutes().map((route) => `${route.method} ${route.path}`);

      expect(documented.filter((route) => !known.has(route))).toEqual([]);
      expect(documented).toHaveLength(new Set(documented).size);
    });
  });

  describe('configuration reference', () => {
    it('documents every environment variable that functions/shared/config.ts reads', () => {
      const names = quotedEnvNames(readRepoFile('functions/shared/config.ts'));

      // A sanity floor, so a regex that stops matching cannot make this test pass vacuously.
      expect(names.length).toBeGreaterThanOrEqual(15);
      expect(names.filter((name) => !readme.includes(`\`${name}\``))).toEqual([]);
    });

    it('documents every environment variable that the dev server reads', () => {
      const source = readRepoFile('local/dev.ts');
      const names = [...source.matchAll(/setting\('([A-Z][A-Z0-9_]*)'\)/g)].map((m) => m[1] ?? '');

      expect(names.length).toBeGreaterThan(0);
      expect(names.filter((name) => !readme.includes(`\`${name}\``))).toEqual([]);
    });
  });

  describe('commands', () => {
    it('shows only npm scripts that package.json defines', () => {
      const { scripts } = JSON.parse(readRepoFile('package.json')) as { scripts: Record<string, string> };
      const shown = [...new Set([...readme.matchAll(/npm run ([\w:-]+)/g)].map((m) => m[1] ?? ''))];

      expect(shown.length).toBeGreaterThan(0);
      expect(shown.filter((script) => !(script in scripts))).toEqual([]);
    });

    it('shows no npm script whose tsx entry file is missing', () => {
      const shown = [...new Set([...readme.matchAll(/npm run ([\w:-]+)/g)].map((m) => m[1] ?? ''))];
      // `tsx [--import <file>]... <entry>`: the entry and every file it imports first.
      const entries = shown.flatMap((script) => {
        const { command, flags, entry } = npmScript(script);
        if (command !== 'tsx' || !/^(--import \S+( |$))*$/.test(flags.join(' '))) return [];
        return [...flags.filter((word) => word !== '--import'), entry];
      });

      expect(entries).toEqual(
        expect.arrayContaining(['local/dev.ts', './local/lean-ioredis.ts', 'bench/run.ts']),
      );
      expect(entries.filter((entry) => !existsSync(new URL(`../../${entry}`, import.meta.url)))).toEqual([]);
    });
  });
});
