import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { Architecture, Runtime } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { ISecret } from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

export interface RouteFunctionProps {
  /** Handler file under `functions/`, without extension, as in the route table. */
  readonly entry: string;
  /** Shown in the Lambda console. */
  readonly description?: string;
  /**
   * @default 256
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
}

/** Settings for the functions that call OpenAI. */
export interface OpenAiSettings {
  /** Chat model, `OPENAI_MODEL`. */
  readonly model: string;
  /**
   * Moderation model, `OPENAI_MODERATION_MODEL`.
   * @default - the functions' own default
   */
  readonly moderationModel?: string;
}

/**
 * The function defaults every route shares (runtime, arm64, memory, timeout, local esbuild
 * bundling, its own log group), and `bindX()` helpers that add a resource's environment variable
 * and its IAM grant together, so a function never gets one without the other.
 */
export class RouteFunction extends Construct {
  readonly function: NodejsFunction;
  readonly logGroup: LogGroup;

  constructor(scope: Construct, id: string, props: RouteFunctionProps) {
    super(scope, id);

    // An explicit log group, rather than the `logRetention` prop, sets the retention without the
    // extra custom-resource Lambda function CDK would add for it.
    this.logGroup = new LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? RetentionDays.ONE_MONTH,
      // The logs expire anyway; retaining the group would only orphan it when the stack is deleted.
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.function = new NodejsFunction(this, 'Function', {
      entry: join(repoRoot, 'functions', `${props.entry}.ts`),
      projectRoot: repoRoot,
      depsLockFilePath: join(repoRoot, 'package-lock.json'),
      description: props.description,
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize ?? 256,
      timeout: props.timeout ?? Duration.seconds(30),
      logGroup: this.logGroup,
      bundling: {
        minify: true,
        // Source maps would need --enable-source-maps, which slows every cold start.
        sourceMap: false,
        target: 'node22',
        format: OutputFormat.CJS,
        // The Node.js runtime ships the AWS SDK v3; bundling it would only grow the package.
        externalModules: ['@aws-sdk/*'],
      },
    });
  }

  /** Lets the function read the Redis URL secret: `REDIS_SECRET_ARN` plus the read grant. */
  bindRedis(secret: ISecret): this {
    this.function.addEnvironment('REDIS_SECRET_ARN', secret.secretArn);
    secret.grantRead(this.function);
    return this;
  }

  /** Lets the function call OpenAI: the key secret's ARN and read grant, and the model settings. */
  bindOpenAi(secret: ISecret, settings: OpenAiSettings): this {
    this.function.addEnvironment('OPENAI_SECRET_ARN', secret.secretArn);
    this.function.addEnvironment('OPENAI_MODEL', settings.model);
    if (settings.moderationModel !== undefined) {
      this.function.addEnvironment('OPENAI_MODERATION_MODEL', settings.moderationModel);
    }
    secret.grantRead(this.function);
    return this;
  }
}
