/**
 * `npm run openapi`: writes openapi.json, the API's OpenAPI 3.1 document with the default limits,
 * for client generators. The deployed `GET /openapi.json` serves the same document with the
 * deployment's own limits and models.
 */
import { writeFileSync } from 'node:fs';
import { routes } from '../functions/routes';
import { loadChatConfig, loadLimits, loadTurnConfig } from '../functions/shared/config';
import { openApiDocument } from '../functions/shared/openapi';
import packageJson from '../package.json';

export function defaultOpenApiDocument(): Record<string, unknown> {
  return openApiDocument(routes, {
    limits: loadLimits({}),
    idempotencyTtlSeconds: loadTurnConfig({}).idempotencyTtlSeconds,
    models: loadChatConfig({}).models,
    version: packageJson.version,
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const path = new URL('../openapi.json', import.meta.url);
  writeFileSync(path, `${JSON.stringify(defaultOpenApiDocument(), null, 2)}\n`);
  console.log(`Wrote ${path.pathname}`);
}
