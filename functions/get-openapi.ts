import packageJson from '../package.json';
import { routes } from './routes';
import { loadChatConfig, loadTurnConfig } from './shared/config';
import { json, limits, route } from './shared/http';
import { openApiDocument } from './shared/openapi';

const document = openApiDocument(routes, {
  limits,
  idempotencyTtlSeconds: loadTurnConfig().idempotencyTtlSeconds,
  models: loadChatConfig().models,
  version: packageJson.version,
});

/** `GET /openapi.json`: this API as an OpenAPI 3.1 document, with this deployment's limits. */
export const handler = route(async () => json(200, document));
