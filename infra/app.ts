import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ChatProxyStack } from './chat-proxy-stack';
import { readStackName } from './config';

const app = new App();
new ChatProxyStack(app, readStackName(app.node), {
  description: 'Chat proxy: a conversation-keeping API in front of OpenAI',
  // The CDK CLI overwrites CDK_DEFAULT_REGION with its own guess, so an explicit AWS_REGION wins.
  env: {
    account: process.env.CDK_DEFAULT_ACCOUNT,
    region: process.env.AWS_REGION ?? process.env.CDK_DEFAULT_REGION,
  },
});
// Every synth checks the AWS Solutions rules; an unacknowledged finding fails it.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
