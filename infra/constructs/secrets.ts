import { type ISecret, Secret } from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

export interface SecretsProps {
  /**
   * Complete ARN of an existing secret whose SecretString is the OpenAI API key.
   * @default - a new secret, holding a random placeholder until the operator puts the key in it
   */
  readonly openAiSecretArn?: string;
  /**
   * Complete ARN of an existing secret whose SecretString is the Redis URL.
   * @default - a new secret, holding a random placeholder until the operator puts the URL in it
   */
  readonly redisSecretArn?: string;
}

/**
 * The two secrets the functions read at run time. Their values never pass through CDK: a created
 * secret starts with a generated placeholder and the operator puts the real value in after deploying.
 */
export class Secrets extends Construct {
  readonly openAiApiKey: ISecret;
  readonly redisUrl: ISecret;

  constructor(scope: Construct, id: string, props: SecretsProps = {}) {
    super(scope, id);

    this.openAiApiKey = props.openAiSecretArn
      ? Secret.fromSecretCompleteArn(this, 'OpenAiApiKey', props.openAiSecretArn)
      : new Secret(this, 'OpenAiApiKey', {
          description:
            'Chat proxy: the OpenAI API key (sk-...) as a plain SecretString. Until you put it here, ' +
            'this holds a random placeholder, which OpenAI rejects.',
        });

    this.redisUrl = props.redisSecretArn
      ? Secret.fromSecretCompleteArn(this, 'RedisUrl', props.redisSecretArn)
      : new Secret(this, 'RedisUrl', {
          description:
            'Chat proxy: the Redis URL as a plain SecretString, like rediss://default:PASSWORD@HOST:6379. ' +
            'Until you put it here, this holds a random placeholder and the functions cannot reach Redis.',
        });
  }
}
