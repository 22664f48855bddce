import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Annotations, Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import type { ISecurityGroup, IVpc, SubnetSelection } from 'aws-cdk-lib/aws-ec2';
import { ManagedPolicy, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { ISecret } from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { bundlingAliases } from '../bundling/lean-ioredis';
import { BUNDLE_TARGET, EXTERNAL_MODULES, MINIFY, SOURCE_MAP, TOKEN_RANKS_HOOK } from '../bundling/options';
import type { ChatSettings } from '../config';
import { FUNCTION_MEMORY_MB } from '../function-memory';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

export interface RouteFunctionProps {
  /** Handler file under `functions/`, without extension, as in the route table. */
  readonly entry: string;
  /**
   * Ship the tokenizer's merge ranks beside the bundle (the functions that count tokens).
   * @default false
   */
  readonly tokenizer?: boolean;
  /** Shown in the Lambda console. */
  readonly description?: string;
  /**
   * @default FUNCTION_MEMORY_MB (256)
   */
  readonly memorySize?: number;
  /**
   * API Gateway gives up on an integration after 29 s; a little more lets the function finish
   * its own error handling and logging instead of being cut off mid-request.
   * @default Duration.seconds(30)
   */
  readonly timeout?: Duration;
  /**
   * @default RetentionDays.ONE_MONTH
   */
  readonly logRetention?: RetentionDays;
  /**
   * Runs the function in these subnets, to reach a store inside a VPC.
   * @default - outside any VPC, with Lambda's own internet access
   */
  readonly network?: FunctionNetwork;
}

/** Where a function in a VPC runs. Its subnets need a NAT route for OpenAI. */
export interface FunctionNetwork {
  readonly vpc: IVpc;
  readonly subnets: SubnetSelection;
  readonly securityGroups: readonly ISecurityGroup[];
}

/** Where the function's Powertools metrics go. */
export interface MetricsSettings {
  /** `POWERTOOLS_METRICS_NAMESPACE` */
  readonly namespace: string;
  /** `POWERTOOLS_SERVICE_NAME`, also the `service` dimension of every metric. */
  readonly service: string;
}

/** How the functions reach Redis. */
export interface RedisSettings {
  /**
   * The store is a Redis Cluster (MemoryDB always is): `REDIS_CLUSTER=true`, so the client
   * follows the cluster's slot map instead of talking to one node.
   * @default false
   */
  readonly cluster?: boolean;
}

/** Settings for the functions that call OpenAI. */
export interface OpenAiSettings {
  /**
   * Moderation model, `OPENAI_MODERATION_MODEL`.
   * @default - the functions' own default
   */
  readonly moderationModel?: string;
}

/**
 * The function defaults every route shares (runtime, arm64, memory, timeout, local esbuild
 * bundling, its own log group and a role that may write only to it), and `bindX()` helpers that
 * add a resource's environment variable and its IAM grant together, so a function never gets one
 * without the other.
 */
export class RouteFunction extends Construct {
  readonly function: NodejsFunction;
  readonly logGroup: LogGroup;
  readonly role: Role;

  constructor(scope: Construct, id: string, props: RouteFunctionProps) {
    super(scope, id);

    // An explicit log group, rather than the `logRetention` prop, sets the retention without the
    // extra custom-resource Lambda function CDK would add for it.
    this.logGroup = new LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? RetentionDays.ONE_MONTH,
      // The logs expire anyway; retaining the group would only orphan it when the stack is deleted.
      removalPolicy: RemovalPolicy.DESTROY,
    });

    // Rather than AWSLambdaBasicExecutionRole, which may create and write any log group.
    this.role = new Role(this, 'ServiceRole', { assumedBy: new ServicePrincipal('lambda.amazonaws.com') });
    this.logGroup.grantWrite(this.role);
    if (props.network) {
      this.role.addManagedPolicy(
        ManagedPolicy.fromAwsManagedPolicyName('service-role/AWSLambdaVPCAccessExecutionRole'),
      );
      Validations.of(this.role).acknowledge({
        id: 'AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]',
        reason: "Lambda manages the function's network interfaces with this AWS-maintained policy",
      });
    }

    const { aliases, warning } = bundlingAliases(repoRoot);
    if (warning !== undefined) Annotations.of(this).addWarningV2('chat-proxy:lean-ioredis', warning);

    this.function = new NodejsFunction(this, 'Function', {
      entry: join(repoRoot, 'functions', `${props.entry}.ts`),
      projectRoot: repoRoot,
      depsLockFilePath: join(repoRoot, 'package-lock.json'),
      description: props.description,
      runtime: Runtime.NODEJS_24_X,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize ?? FUNCTION_MEMORY_MB,
      timeout: props.timeout ?? Duration.seconds(30),
      logGroup: this.logGroup,
      role: this.role,
      ...(props.network
        ? {
            vpc: props.network.vpc,
            vpcSubnets: props.network.subnets,
            securityGroups: [...props.network.securityGroups],
          }
        : {}),
      bundling: {
        // Shared with the bench, which builds and measures the same bundles (options.ts).
        minify: MINIFY,
        sourceMap: SOURCE_MAP,
        target: BUNDLE_TARGET,
        format: OutputFormat.CJS,
        externalModules: [...EXTERNAL_MODULES],
        // The lean ioredis (quicker to import, settling without closures per command) and no `debug`
        // (lean-ioredis.ts).
        esbuildArgs: { '--alias': aliases },
        ...(props.tokenizer
          ? {
              commandHooks: {
                beforeBundling: () => [],
                beforeInstall: () => [],
                afterBundling: (_inputDir: string, outputDir: string) => [
                  `node "${TOKEN_RANKS_HOOK}" "${outputDir}"`,
                ],
              },
            }
          : {}),
      },
    });
  }

  /**
   * Lets the function read the Redis URL secret: `REDIS_SECRET_ARN` plus the read grant, and
   * `REDIS_CLUSTER=true` for a cluster.
   */
  bindRedis(secret: ISecret, settings: RedisSettings = {}): this {
    this.function.addEnvironment('REDIS_SECRET_ARN', secret.secretArn);
    if (settings.cluster) this.function.addEnvironment('REDIS_CLUSTER', 'true');
    secret.grantRead(this.function);
    return this;
  }

  /** Names the namespace and service of the function's EMF metrics, which the alarms read. */
  bindMetrics(settings: MetricsSettings): this {
    this.function.addEnvironment('POWERTOOLS_METRICS_NAMESPACE', settings.namespace);
    this.function.addEnvironment('POWERTOOLS_SERVICE_NAME', settings.service);
    return this;
  }

  /**
   * `CORS_ALLOWED_ORIGINS`, comma-separated: the function answers a request from one of these
   * origins (or any, for `*`) with `Access-Control-Allow-Origin`, as API Gateway does not add it to
   * proxy integration responses.
   */
  allowOrigins(origins: readonly string[]): this {
    this.function.addEnvironment('CORS_ALLOWED_ORIGINS', origins.join(','));
    return this;
  }

  /**
   * The deployment's chat settings, as environment variables: every function that reads a chat's
   * settings, builds a prompt or documents the API sees the same model list and budget.
   */
  applyChatSettings(model: string, settings: ChatSettings): this {
    const environment: Record<string, string | number | boolean | undefined> = {
      OPENAI_MODEL: model,
      OPENAI_MODELS: settings.models?.join(','),
      MAX_CONTEXT_TOKENS: settings.maxContextTokens,
      CHAT_TTL_DAYS: settings.ttlDays,
      OPENAI_TEMPERATURE: settings.temperature,
      OPENAI_MAX_TOKENS: settings.maxTokens,
      LOG_CONTENT: settings.logContent || undefined,
    };
    for (const [name, value] of Object.entries(environment)) {
      if (value !== undefined) this.function.addEnvironment(name, String(value));
    }
    return this;
  }

  /** Lets the function call OpenAI: the key secret's ARN and read grant, and the model settings. */
  bindOpenAi(secret: ISecret, settings: OpenAiSettings): this {
    this.function.addEnvironment('OPENAI_SECRET_ARN', secret.secretArn);
    if (settings.moderationModel !== undefined) {
      this.function.addEnvironment('OPENAI_MODERATION_MODEL', settings.moderationModel);
    }
    secret.grantRead(this.function);
    return this;
  }
}
