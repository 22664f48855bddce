import { Validations } from 'aws-cdk-lib';
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
  /**
   * A Redis URL secret created elsewhere in the stack, e.g. by the store it points to; takes
   * precedence over `redisSecretArn`.
   * @default - see `redisSecretArn`
   */
  readonly redisUrl?: ISecret;
}

/**
 * The two secrets the functions read at run time. Their values never pass through CDK: a created
 * secret starts with a generated placeholder and the operator puts the real value in after deploying.
 * Neither rotates automatically, as neither value is issued by AWS: the operator puts a new version
 * in, and the functions pick it up (README, "Key rotation").
 */
export class Secrets extends Construct {
  readonly openAiApiKey: ISecret;
  readonly redisUrl: ISecret;

  constructor(scope: Construct, id: string, props: SecretsProps = {}) {
    super(scope, id);

    if (props.openAiSecretArn) {
      this.openAiApiKey = Secret.fromSecretCompleteArn(this, 'OpenAiApiKey', props.openAiSecretArn);
    } else {
      this.openAiApiKey = new Secret(this, 'OpenAiApiKey', {
        description:
          'Chat proxy: the OpenAI API key (sk-...) as a plain SecretString. Until you put it here, ' +
          'this holds a random placeholder, which OpenAI rejects.',
      });
      Validations.of(this.openAiApiKey).acknowledge({
        id: 'AwsSolutions::AwsSolutions-SMG4',
        reason: 'OpenAI issues the key: rotate it there and put a new secret version (README, Key rotation)',
      });
    }

    if (props.redisUrl) {
      this.redisUrl = props.redisUrl;
    } else if (props.redisSecretArn) {
      this.redisUrl = Secret.fromSecretCompleteArn(this, 'RedisUrl', props.redisSecretArn);
    } else {
      this.redisUrl = new Secret(this, 'RedisUrl', {
        description:
          'Chat proxy: the Redis URL as a plain SecretString, like rediss://default:PASSWORD@HOST:6379. ' +
          'Until you put it here, this holds a random placeholder and the functions cannot reach Redis.',
      });
      Validations.of(this.redisUrl).acknowledge({
        id: 'AwsSolutions::AwsSolutions-SMG4',
        reason:
          'The Redis provider issues the password: rotate it there and put the new URL as a new version',
      });
    }
  }
}
