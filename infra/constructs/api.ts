import { type Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import {
  AccessLogFormat,
  ApiKey,
  EndpointType,
  type IApiKey,
  type IModel,
  LambdaIntegration,
  LogGroupLogDestination,
  type Method,
  MethodLoggingLevel,
  Period,
  type QuotaSettings,
  type RequestValidator,
  ResponseTransferMode,
  ResponseType,
  RestApi,
  type ThrottleSettings,
  type UsagePlan,
} from 'aws-cdk-lib/aws-apigateway';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { CfnWebACL, CfnWebACLAssociation } from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import type { BodySchemaName, RouteDefinition } from '../../functions/routes';
import type { ObjectSchema } from '../../functions/shared/validation';
import { apiGatewayModelSchema } from '../request-models';

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
  /**
   * The JSON Schema of each request body a route names (`RouteDefinition.body`); API Gateway turns
   * away a body that does not match before any function runs.
   * @default - no body schemas: adding a route with a `body` throws
   */
  readonly bodySchemas?: Readonly<Partial<Record<BodySchemaName, ObjectSchema>>>;
  /**
   * Browser origins allowed to call the API: answers preflight requests and adds
   * `Access-Control-Allow-Origin` to the errors API Gateway answers by itself. The functions add
   * it to their own responses.
   * @default - CORS off
   */
  readonly corsOrigins?: readonly string[];
  /**
   * Requests per 5 minutes from one IP address above which a WAF web ACL blocks the address.
   * @default - no web ACL
   */
  readonly wafRateLimit?: number;
  /**
   * How long access logs are kept.
   * @default RetentionDays.ONE_MONTH
   */
  readonly accessLogRetention?: RetentionDays;
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
  /** A JSON string literal, or a `$context` variable that renders as one (no VTL here). */
  readonly message: string;
}

/** API Gateway's own error message, already quoted and escaped as a JSON string. */
const gatewayMessage = '$context.error.messageString';

/**
 * Why a body failed its model, e.g. `[object has missing required properties ([\"content\"])]`:
 * API Gateway escapes it for JSON but does not quote it. Gateway response templates are plain
 * substitutions, not VTL, so `$util.escapeJavaScript` is not available and not needed.
 */
const validationMessage = '"$context.error.validationErrorString"';

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
  BadRequestBody: {
    type: ResponseType.BAD_REQUEST_BODY,
    statusCode: '400',
    code: 'invalid_body',
    message: validationMessage,
  },
  // With a web ACL: a per-IP rate limit or a common rule matched.
  WafFiltered: {
    type: ResponseType.WAF_FILTERED,
    statusCode: '403',
    code: 'forbidden',
    message: JSON.stringify(
      'Blocked by the web application firewall: too many requests from this address, or a rule matched',
    ),
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
 * One JSON line per request. Every value is quoted: a variable API Gateway has no value for renders
 * as `-`, which would break a bare number. `error` is already a quoted JSON string. No field holds a
 * key, a body or a header value.
 */
export const accessLogFormat = JSON.stringify({
  requestId: '$context.requestId',
  ip: '$context.identity.sourceIp',
  apiKeyId: '$context.identity.apiKeyId',
  method: '$context.httpMethod',
  path: '$context.path',
  resourcePath: '$context.resourcePath',
  status: '$context.status',
  latency: '$context.responseLatency',
  integrationLatency: '$context.integration.latency',
  responseLength: '$context.responseLength',
  // STREAMED replies run as long as the turn; time to first content is their latency.
  transferMode: '$context.integration.responseTransferMode',
  timeToFirstContent: '$context.integration.timeToFirstContent',
  errorType: '$context.error.responseType',
  wafResponseCode: '$context.wafResponseCode',
  error: '@ERROR@',
}).replace('"@ERROR@"', '$context.error.messageString');

/** The headers a browser may send, for the CORS preflight answer. */
export const CORS_ALLOW_HEADERS = ['Content-Type', 'x-api-key', 'Idempotency-Key', 'Accept'] as const;
/** The methods a browser may use, for the CORS preflight answer. */
export const CORS_ALLOW_METHODS = ['GET', 'POST', 'DELETE', 'OPTIONS'] as const;

/**
 * The Regional REST API: one method per route, API keys with a usage plan, JSON gateway errors,
 * request body models, JSON access logs and execution logs at ERROR. Routes are added with
 * `addRoute`, so the route table stays the only list of routes.
 */
export class ChatProxyApi extends Construct {
  readonly restApi: RestApi;
  readonly usagePlan: UsagePlan;
  /** The API keys, by name. */
  readonly apiKeys: ReadonlyMap<string, IApiKey>;
  readonly accessLogGroup: LogGroup;
  /** The web ACL in front of the stage, when `wafRateLimit` is set. */
  readonly webAcl: CfnWebACL | undefined;

  private readonly bodySchemas: Readonly<Partial<Record<BodySchemaName, ObjectSchema>>>;
  private readonly models = new Map<BodySchemaName, IModel>();
  private bodyValidator: RequestValidator | undefined;

  constructor(scope: Construct, id: string, props: ChatProxyApiProps = {}) {
    super(scope, id);
    const stackName = Stack.of(this).stackName;
    this.bodySchemas = props.bodySchemas ?? {};

    this.accessLogGroup = new LogGroup(this, 'AccessLogs', {
      retention: props.accessLogRetention ?? RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    const corsOrigins = props.corsOrigins?.length ? props.corsOrigins : undefined;
    this.restApi = new RestApi(this, 'RestApi', {
      restApiName: stackName,
      description: 'Chat proxy: keeps conversations in Redis and calls OpenAI',
      endpointTypes: [EndpointType.REGIONAL],
      // Execution logging needs the account's API Gateway CloudWatch role. It is one setting per
      // account and Region, so it is kept when this stack is deleted (another API may rely on it).
      cloudWatchRole: true,
      cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN,
      deployOptions: {
        stageName: props.stageName ?? 'prod',
        tracingEnabled: false,
        accessLogDestination: new LogGroupLogDestination(this.accessLogGroup),
        accessLogFormat: AccessLogFormat.custom(accessLogFormat),
        loggingLevel: MethodLoggingLevel.ERROR,
        // Full request and response logging would write chat content to the logs.
        dataTraceEnabled: false,
        metricsEnabled: false,
      },
      ...(corsOrigins
        ? {
            defaultCorsPreflightOptions: {
              allowOrigins: [...corsOrigins],
              allowHeaders: [...CORS_ALLOW_HEADERS],
              allowMethods: [...CORS_ALLOW_METHODS],
            },
          }
        : {}),
    });
    // RestApi always outputs its URL under a generated name; the stack outputs it as `ApiUrl`.
    this.restApi.node.tryRemoveChild('Endpoint');
    Validations.of(this.restApi).acknowledge(
      {
        id: 'AwsSolutions::AwsSolutions-APIG4',
        reason:
          'Tenants authenticate with API keys under a usage plan; only routes the route table marks public (health, OpenAPI document) and CORS preflights take none',
      },
      {
        id: 'AwsSolutions::AwsSolutions-COG4',
        reason: 'No Cognito users: API keys with a usage plan are the auth model of this API',
      },
    );
    const cloudWatchRole = this.restApi.node.tryFindChild('CloudWatchRole');
    if (cloudWatchRole) {
      Validations.of(cloudWatchRole).acknowledge({
        id: 'AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
        reason: 'API Gateway requires this AWS-managed policy on its account-level CloudWatch role',
      });
    }

    const corsHeaders = corsOrigins ? gatewayCorsHeaders(corsOrigins) : {};
    for (const [errorId, error] of Object.entries(gatewayErrors)) {
      this.restApi.addGatewayResponse(errorId, {
        type: error.type,
        statusCode: error.statusCode,
        responseHeaders: { 'Content-Type': "'application/json'", ...corsHeaders },
        templates: { 'application/json': `{"error":{"code":"${error.code}","message":${error.message}}}` },
      });
    }

    this.webAcl = props.wafRateLimit === undefined ? undefined : this.addWebAcl(props.wafRateLimit);
    if (this.webAcl === undefined) {
      Validations.of(this.restApi.deploymentStage).acknowledge({
        id: 'AwsSolutions::AwsSolutions-APIG3',
        reason: 'WAF is opt-in (context wafRateLimit); the usage plan already throttles every API key',
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

  /**
   * Adds the route's method on its path, invoking `handler` through a Lambda proxy integration.
   * A route with a `body` gets that body's model and the body validator.
   */
  addRoute(route: RouteDefinition, handler: IFunction, options: RouteOptions = {}): Method {
    const integration = new LambdaIntegration(handler, {
      // Console test invocations would need a second Lambda permission per method; not worth it.
      allowTestInvoke: false,
      responseTransferMode: options.responseStreaming ? ResponseTransferMode.STREAM : undefined,
      timeout: options.timeout,
    });
    const body = route.body === undefined ? undefined : this.bodyModel(route.body);
    return this.restApi.root.resourceForPath(route.path).addMethod(route.method, integration, {
      apiKeyRequired: route.apiKeyRequired,
      ...(body
        ? { requestModels: { 'application/json': body }, requestValidator: this.validatesBodies() }
        : {}),
    });
  }

  /** One model per body schema, shared by the routes that take that body. */
  private bodyModel(name: BodySchemaName): IModel {
    const existing = this.models.get(name);
    if (existing) return existing;
    const schema = this.bodySchemas[name];
    if (schema === undefined) {
      throw new Error(
        `A route takes the "${name}" body, but ChatProxyApi has no schema for it (bodySchemas)`,
      );
    }
    const modelName = `${name.charAt(0).toUpperCase()}${name.slice(1)}Body`;
    const model = this.restApi.addModel(modelName, {
      modelName,
      contentType: 'application/json',
      description: `The "${name}" request body`,
      schema: apiGatewayModelSchema(schema, modelName),
    });
    this.models.set(name, model);
    return model;
  }

  private validatesBodies(): RequestValidator {
    this.bodyValidator ??= this.restApi.addRequestValidator('BodyValidator', {
      requestValidatorName: 'body-and-parameters',
      validateRequestBody: true,
      // Checks the parameters a method declares required. Ours declare none: the functions check
      // chat ids, query strings and headers, and answer in the API's own error codes.
      validateRequestParameters: true,
    });
    return this.bodyValidator;
  }

  /** A Regional web ACL on the stage: a per-IP rate limit and the AWS common rule set. */
  private addWebAcl(rateLimit: number): CfnWebACL {
    const metricPrefix = Stack.of(this).stackName.replace(/[^A-Za-z0-9_-]/g, '');
    const visibility = (name: string): CfnWebACL.VisibilityConfigProperty => ({
      cloudWatchMetricsEnabled: true,
      metricName: `${metricPrefix}-${name}`,
      sampledRequestsEnabled: true,
    });
    const webAcl = new CfnWebACL(this, 'WebAcl', {
      scope: 'REGIONAL',
      defaultAction: { allow: {} },
      description: 'Chat proxy: per-IP rate limit and the AWS common rule set',
      visibilityConfig: visibility('WebAcl'),
      rules: [
        {
          name: 'RateLimitPerIp',
          priority: 0,
          action: { block: {} },
          statement: {
            rateBasedStatement: { limit: rateLimit, aggregateKeyType: 'IP', evaluationWindowSec: 300 },
          },
          visibilityConfig: visibility('RateLimitPerIp'),
        },
        {
          name: 'AwsCommonRuleSet',
          priority: 1,
          overrideAction: { none: {} },
          statement: {
            managedRuleGroupStatement: {
              vendorName: 'AWS',
              name: 'AWSManagedRulesCommonRuleSet',
              // Chat messages are free text: code, URLs, paths and long prompts are content here,
              // not attacks, and the functions validate every body. These rules only count.
              ruleActionOverrides: COUNT_ONLY_BODY_RULES.map((name) => ({
                name,
                actionToUse: { count: {} },
              })),
            },
          },
          visibilityConfig: visibility('AwsCommonRuleSet'),
        },
      ],
    });
    new CfnWebACLAssociation(this, 'WebAclAssociation', {
      resourceArn: this.restApi.deploymentStage.stageArn,
      webAclArn: webAcl.attrArn,
    });
    return webAcl;
  }
}

/** Rules of AWSManagedRulesCommonRuleSet that inspect the body and would block ordinary chat content. */
export const COUNT_ONLY_BODY_RULES = [
  'SizeRestrictions_BODY',
  'CrossSiteScripting_BODY',
  'GenericLFI_BODY',
  'GenericRFI_BODY',
  'EC2MetaDataSSRF_BODY',
] as const;

/**
 * `Access-Control-Allow-Origin` for the errors API Gateway answers itself. A gateway response can
 * only set a fixed value or copy a request header, not choose among origins, so with several
 * origins it echoes the caller's Origin: these bodies hold nothing but an error code and message.
 */
function gatewayCorsHeaders(origins: readonly string[]): Record<string, string> {
  const [only] = origins;
  if (origins.length === 1 && only !== undefined) {
    return { 'Access-Control-Allow-Origin': `'${only}'`, ...(only === '*' ? {} : { Vary: "'Origin'" }) };
  }
  return { 'Access-Control-Allow-Origin': 'method.request.header.Origin', Vary: "'Origin'" };
}
