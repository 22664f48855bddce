import { type Duration, Stack } from 'aws-cdk-lib';
import {
  ApiKey,
  EndpointType,
  type IApiKey,
  LambdaIntegration,
  type Method,
  Period,
  type QuotaSettings,
  ResponseTransferMode,
  ResponseType,
  RestApi,
  type ThrottleSettings,
  type UsagePlan,
} from 'aws-cdk-lib/aws-apigateway';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';
import type { RouteDefinition } from '../../functions/routes';

export interface ChatProxyApiProps {
  /**
   * The deployment stage, the last segment of the API URL.
   * @default 'prod'
   */
  readonly stageName?: string;
  /**
   * One API key per name; each key is a tenant. CloudFormation generates the key values, so
   * none ever appears in the template.
   * @default ['default']
   */
  readonly apiKeyNames?: readonly string[];
  /**
   * Per-key request rate.
   * @default { rateLimit: 10, burstLimit: 20 }
   */
  readonly throttle?: ThrottleSettings;
  /**
   * Per-key request quota.
   * @default { limit: 10000, period: Period.DAY }
   */
  readonly quota?: QuotaSettings;
}

export interface RouteOptions {
  /**
   * Streams the function's response to the client as it is written, for a handler wrapped in
   * `awslambda.streamifyResponse`; a buffered integration cannot parse such a handler's output.
   * @default false
   */
  readonly responseStreaming?: boolean;
  /**
   * How long API Gateway waits for the function: at most 29 s when buffered, up to 15 minutes
   * when streaming.
   * @default Duration.seconds(29)
   */
  readonly timeout?: Duration;
}

interface GatewayError {
  readonly type: ResponseType;
  /** Left unset to keep the status API Gateway chose (the DEFAULT_* catch-alls cover many). */
  readonly statusCode?: string;
  readonly code: string;
  /** A JSON string literal, or a VTL variable that renders as one. */
  readonly message: string;
}

/** API Gateway's own error message, already quoted and escaped as a JSON string. */
const gatewayMessage = '$context.error.messageString';

/**
 * The errors API Gateway answers by itself, before any function runs, reshaped into the
 * `{"error":{"code","message"}}` body the functions use, so clients parse a single error format.
 */
const gatewayErrors: Readonly<Record<string, GatewayError>> = {
  InvalidApiKey: {
    type: ResponseType.INVALID_API_KEY,
    statusCode: '403',
    code: 'forbidden',
    message: JSON.stringify('Forbidden: a valid x-api-key header is required'),
  },
  // API Gateway also gives this answer for a path or method it has no route for.
  MissingAuthenticationToken: {
    type: ResponseType.MISSING_AUTHENTICATION_TOKEN,
    statusCode: '403',
    code: 'forbidden',
    message: JSON.stringify('Forbidden: a valid x-api-key header is required, or the route does not exist'),
  },
  Throttled: {
    type: ResponseType.THROTTLED,
    statusCode: '429',
    code: 'rate_limited',
    message: JSON.stringify('Too many requests for this API key; slow down and retry'),
  },
  QuotaExceeded: {
    type: ResponseType.QUOTA_EXCEEDED,
    statusCode: '429',
    code: 'rate_limited',
    message: JSON.stringify("This API key's request quota for the period is used up"),
  },
  RequestTooLarge: {
    type: ResponseType.REQUEST_TOO_LARGE,
    statusCode: '413',
    code: 'payload_too_large',
    message: JSON.stringify('The request is larger than API Gateway accepts'),
  },
  Default4xx: { type: ResponseType.DEFAULT_4XX, code: 'bad_request', message: gatewayMessage },
  Default5xx: { type: ResponseType.DEFAULT_5XX, code: 'gateway_error', message: gatewayMessage },
};

/**
 * The Regional REST API: one method per route, API keys with a usage plan, and JSON gateway
 * errors. Routes are added with `addRoute`, so the route table stays the only list of routes.
 */
export class ChatProxyApi extends Construct {
  readonly restApi: RestApi;
  readonly usagePlan: UsagePlan;
  /** The API keys, by name. */
  readonly apiKeys: ReadonlyMap<string, IApiKey>;

  constructor(scope: Construct, id: string, props: ChatProxyApiProps = {}) {
    super(scope, id);
    const stackName = Stack.of(this).stackName;

    this.restApi = new RestApi(this, 'RestApi', {
      restApiName: stackName,
      description: 'Chat proxy: keeps conversations in Redis and calls OpenAI',
      endpointTypes: [EndpointType.REGIONAL],
      // The account-wide CloudWatch role is only needed for execution logging, which stays off.
      cloudWatchRole: false,
      deployOptions: { stageName: props.stageName ?? 'prod', tracingEnabled: false },
    });
    // RestApi always outputs its URL under a generated name; the stack outputs it as `ApiUrl`.
    this.restApi.node.tryRemoveChild('Endpoint');

    for (const [errorId, error] of Object.entries(gatewayErrors)) {
      this.restApi.addGatewayResponse(errorId, {
        type: error.type,
        statusCode: error.statusCode,
        responseHeaders: { 'Content-Type': "'application/json'" },
        templates: { 'application/json': `{"error":{"code":"${error.code}","message":${error.message}}}` },
      });
    }

    this.usagePlan = this.restApi.addUsagePlan('UsagePlan', {
      name: stackName,
      description: 'Per-key rate and quota for every tenant of the chat proxy',
      throttle: props.throttle ?? { rateLimit: 10, burstLimit: 20 },
      quota: props.quota ?? { limit: 10_000, period: Period.DAY },
      apiStages: [{ api: this.restApi, stage: this.restApi.deploymentStage }],
    });

    const apiKeys = new Map<string, IApiKey>();
    for (const name of props.apiKeyNames ?? ['default']) {
      const apiKey = new ApiKey(this, `ApiKey-${name}`, {
        apiKeyName: `${stackName}-${name}`,
        description: `Chat proxy tenant "${name}": its chats and system prompts are its own`,
      });
      this.usagePlan.addApiKey(apiKey);
      apiKeys.set(name, apiKey);
    }
    this.apiKeys = apiKeys;
  }

  /** Adds the route's method on its path, invoking `handler` through a Lambda proxy integration. */
  addRoute(route: RouteDefinition, handler: IFunction, options: RouteOptions = {}): Method {
    const integration = new LambdaIntegration(handler, {
      // Console test invocations would need a second Lambda permission per method; not worth it.
      allowTestInvoke: false,
      responseTransferMode: options.responseStreaming ? ResponseTransferMode.STREAM : undefined,
      timeout: options.timeout,
    });
    return this.restApi.root
      .resourceForPath(route.path)
      .addMethod(route.method, integration, { apiKeyRequired: route.apiKeyRequired });
  }
}
