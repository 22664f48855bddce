/**
 * THE route table. The CDK stack creates one Lambda function and one API Gateway method per entry,
 * the local server dispatches to the same handler files, and the docs and tests read it too, so none
 * of them can drift from the others.
 *
 * This module is pure data: infra imports it at synth time, so it must not import any handler.
 */

/**
 * What a route's function needs: the stack grants access per resource, nothing more, and ships the
 * tokenizer's data only to the functions that count tokens.
 */
export type Need = 'redis' | 'openai' | 'tokenizer';

export type HttpMethod = 'GET' | 'POST' | 'DELETE';

/** The request body schemas of `shared/schemas.ts`, by name. */
export type BodySchemaName = 'content' | 'chat' | 'image' | 'settings';

/** The answer schemas of `shared/openapi.ts`, by name. */
export type ResponseSchemaName =
  | 'html'
  | 'empty'
  | 'systemPrompt'
  | 'moderation'
  | 'turn'
  | 'messages'
  | 'chatInfo'
  | 'settings'
  | 'chatList'
  | 'deleted'
  | 'usage'
  | 'openapi';

/** Query parameters a route reads, defined in `shared/openapi.ts`. */
export type QueryParameterName = 'limit' | 'before' | 'after' | 'cursor';

export interface RouteDefinition {
  /** Stable identifier, used for construct ids and logical ids (PascalCase). */
  readonly id: string;
  readonly method: HttpMethod;
  /** API Gateway path template; path parameters in braces. */
  readonly path: string;
  /** Handler file under `functions/`, without extension; it exports `handler`. */
  readonly entry: string;
  /** Whether the route needs an API key (every route but the health check). */
  readonly apiKeyRequired: boolean;
  readonly needs: readonly Need[];
  /** The JSON body the route takes (a schema of `shared/schemas.ts`); none when absent. */
  readonly body?: BodySchemaName;
  /** What a successful call answers. */
  readonly response: ResponseSchemaName;
  readonly query?: readonly QueryParameterName[];
  /**
   * The handler is wrapped in `awslambda.streamifyResponse` and can stream its answer (Server-Sent
   * Events); API Gateway must then use a streaming integration.
   */
  readonly streaming?: boolean;
  /** One line for docs and the API description. */
  readonly summary: string;
}

export const routes: readonly RouteDefinition[] = [
  {
    id: 'Health',
    method: 'GET',
    path: '/',
    entry: 'health',
    response: 'html',
    apiKeyRequired: false,
    needs: [],
    summary: 'Health check: 200 text/html "Hello, World!"',
  },
  {
    id: 'GetOpenApi',
    method: 'GET',
    path: '/openapi.json',
    entry: 'get-openapi',
    response: 'openapi',
    apiKeyRequired: false,
    needs: [],
    summary: 'This API as an OpenAPI 3.1 document',
  },
  {
    id: 'GetSystem',
    method: 'GET',
    path: '/system',
    entry: 'get-system',
    response: 'systemPrompt',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "Get the tenant's global system prompt",
  },
  {
    id: 'PostSystem',
    method: 'POST',
    path: '/system',
    entry: 'post-system',
    response: 'empty',
    body: 'content',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "Set the tenant's global system prompt",
  },
  {
    id: 'PostMod',
    method: 'POST',
    path: '/mod',
    entry: 'post-mod',
    response: 'moderation',
    body: 'content',
    apiKeyRequired: true,
    // Redis only keeps Idempotency-Key answers, so a retried moderation is not paid twice.
    needs: ['redis', 'openai'],
    summary: 'Run OpenAI moderation on a text',
  },
  {
    id: 'GetChatSystem',
    method: 'GET',
    path: '/{chat_id}/system',
    entry: 'get-chat-system',
    response: 'systemPrompt',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "Get a chat's system prompt",
  },
  {
    id: 'PostChatSystem',
    method: 'POST',
    path: '/{chat_id}/system',
    entry: 'post-chat-system',
    response: 'empty',
    body: 'content',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "Set a chat's system prompt",
  },
  {
    id: 'PostChat',
    method: 'POST',
    path: '/{chat_id}/chat',
    entry: 'post-chat',
    response: 'turn',
    body: 'chat',
    apiKeyRequired: true,
    needs: ['redis', 'openai', 'tokenizer'],
    streaming: true,
    summary: 'Send a message to a chat and get the reply, whole or streamed',
  },
  {
    id: 'GetChat',
    method: 'GET',
    path: '/{chat_id}/chat',
    entry: 'get-chat',
    response: 'messages',
    query: ['limit', 'before', 'after'],
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "List a chat's messages, oldest first",
  },
  {
    id: 'PostImg',
    method: 'POST',
    path: '/{chat_id}/img',
    entry: 'post-img',
    response: 'turn',
    body: 'image',
    apiKeyRequired: true,
    needs: ['redis', 'openai', 'tokenizer'],
    streaming: true,
    summary: 'Send an image URL and a prompt to a chat and get the reply, whole or streamed',
  },
  {
    id: 'PostClear',
    method: 'POST',
    path: '/{chat_id}/clear',
    entry: 'post-clear',
    response: 'empty',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "Delete a chat's messages (its system prompt stays)",
  },
  {
    id: 'GetChatInfo',
    method: 'GET',
    path: '/{chat_id}',
    entry: 'get-chat-info',
    response: 'chatInfo',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "A chat's dates, message count, token usage and settings",
  },
  {
    id: 'DeleteChat',
    method: 'DELETE',
    path: '/{chat_id}',
    entry: 'delete-chat',
    response: 'empty',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: 'Delete a chat with everything in it',
  },
  {
    id: 'GetSettings',
    method: 'GET',
    path: '/{chat_id}/settings',
    entry: 'get-settings',
    response: 'settings',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "Get a chat's settings",
  },
  {
    id: 'PostSettings',
    method: 'POST',
    path: '/{chat_id}/settings',
    entry: 'post-settings',
    response: 'settings',
    body: 'settings',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "Change a chat's settings (model, temperature, max_tokens, max_context_tokens, ttl_days)",
  },
  {
    id: 'ListChats',
    method: 'GET',
    path: '/chats',
    entry: 'list-chats',
    response: 'chatList',
    query: ['limit', 'cursor'],
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "List the tenant's chats, most recently updated first",
  },
  {
    id: 'DeleteChats',
    method: 'DELETE',
    path: '/chats',
    entry: 'delete-chats',
    response: 'deleted',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "Delete all of the tenant's chats (erasure)",
  },
  {
    id: 'GetUsage',
    method: 'GET',
    path: '/usage',
    entry: 'get-usage',
    response: 'usage',
    apiKeyRequired: true,
    needs: ['redis'],
    summary: "The tenant's token usage totals",
  },
];

/**
 * Path words that are routes in their own right. They can never be chat ids: `/system/system`
 * would otherwise be ambiguous between the global and a chat's system prompt.
 */
export const reservedChatIds: ReadonlySet<string> = new Set(
  routes.flatMap((route) => {
    const first = route.path.split('/')[1] ?? '';
    // Only words a chat id could be (openapi.json could not: ids hold no dot).
    return /^[A-Za-z0-9_-]+$/.test(first) ? [first] : [];
  }),
);
