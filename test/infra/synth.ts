import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { type RouteDefinition, routes } from '../../functions/routes';
import { ChatProxyStack } from '../../infra/chat-proxy-stack';

const cdkJson = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')) as {
  context: Record<string, unknown>;
};

/**
 * The feature flags from cdk.json, so tests synthesize what `cdk synth` does. The app's own
 * settings are left out: the tests pin the defaults of `readStackConfig`, and an operator may
 * change cdk.json freely.
 */
export const featureFlags: Record<string, unknown> = Object.fromEntries(
  Object.entries(cdkJson.context).filter(([key]) => key.startsWith('@aws-cdk')),
);

/** The context cdk.json gives the app, flags and settings alike. */
export const cdkJsonContext: Record<string, unknown> = cdkJson.context;

export const testEnv = { account: '123456789012', region: 'us-east-1' } as const;

export interface SynthOptions {
  /** Run esbuild for every function; slow, so only the bundling test does it. */
  readonly bundle?: boolean;
  /** Where the cloud assembly goes. @default - a temporary directory CDK picks */
  readonly outdir?: string;
}

export function synthesize(context: Record<string, unknown> = {}, options: SynthOptions = {}) {
  const app = new App({
    outdir: options.outdir,
    context: {
      ...featureFlags,
      ...(options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] }),
      ...context,
    },
  });
  const stack = new ChatProxyStack(app, 'ChatProxy', { env: testEnv });
  return { app, stack, template: Template.fromStack(stack) };
}

interface CfnResource {
  readonly Type: string;
  readonly Properties: Record<string, unknown>;
}

/** What a route became in the template, found by following its API method to its function. */
export interface RouteResources {
  readonly route: RouteDefinition;
  /** HTTP method and full path of the API Gateway method. */
  readonly method: string;
  readonly path: string;
  readonly apiKeyRequired: boolean;
  readonly functionId: string;
  /** The method's integration properties (`Type`, `Uri`, `ResponseTransferMode`, ...). */
  readonly integration: Record<string, unknown>;
  readonly function: Record<string, unknown>;
  /** The environment variables of the function. */
  readonly environment: Record<string, unknown>;
  /** Every `Resource` of the function role's statements that allow `secretsmanager:GetSecretValue`. */
  readonly readableSecrets: readonly unknown[];
}

/** Maps each route of the route table to its method, function and secret grants in the template. */
export function resourcesByRoute(template: Template): Map<string, RouteResources> {
  const resources = (template.toJSON() as { Resources: Record<string, CfnResource> }).Resources;
  const ofType = (type: string) => Object.entries(resources).filter(([, resource]) => resource.Type === type);

  const methods = ofType('AWS::ApiGateway::Method').map(([, method]) => {
    const integration = method.Properties.Integration as Record<string, unknown>;
    const [functionId] = getAttTargets(integration.Uri);
    return {
      integration,
      method: method.Properties.HttpMethod as string,
      path: resourcePath(resources, method.Properties.ResourceId),
      apiKeyRequired: method.Properties.ApiKeyRequired === true,
      functionId,
    };
  });

  const byRoute = new Map<string, RouteResources>();
  for (const route of routes) {
    const method = methods.find((m) => m.method === route.method && m.path === route.path);
    if (method?.functionId === undefined) continue;
    const fn = resources[method.functionId];
    if (fn === undefined) continue;
    const [roleId] = getAttTargets(fn.Properties.Role);
    const environment = (fn.Properties.Environment as { Variables?: Record<string, unknown> } | undefined)
      ?.Variables;
    byRoute.set(route.id, {
      route,
      method: method.method,
      path: method.path,
      apiKeyRequired: method.apiKeyRequired,
      functionId: method.functionId,
      integration: method.integration,
      function: fn.Properties,
      environment: environment ?? {},
      readableSecrets: ofType('AWS::IAM::Policy')
        .filter(([, policy]) => (policy.Properties.Roles as unknown[]).some((role) => isRef(role, roleId)))
        .flatMap(([, policy]) => secretReadResources(policy.Properties.PolicyDocument)),
    });
  }
  return byRoute;
}

function isRef(value: unknown, logicalId: string | undefined): boolean {
  return typeof value === 'object' && value !== null && (value as { Ref?: unknown }).Ref === logicalId;
}

function resourcePath(resources: Record<string, CfnResource>, resourceId: unknown): string {
  if (getAttTargets(resourceId, 'RootResourceId').length > 0) return '/';
  const ref = (resourceId as { Ref?: string }).Ref;
  const resource = ref === undefined ? undefined : resources[ref];
  if (resource === undefined) throw new Error(`Not an API resource: ${JSON.stringify(resourceId)}`);
  const parent = resourcePath(resources, resource.Properties.ParentId);
  return `${parent === '/' ? '' : parent}/${String(resource.Properties.PathPart)}`;
}

/** Logical ids named by every `Fn::GetAtt` of `attribute` inside `value`. */
function getAttTargets(value: unknown, attribute = 'Arn'): string[] {
  if (Array.isArray(value)) return value.flatMap((item) => getAttTargets(item, attribute));
  if (typeof value !== 'object' || value === null) return [];
  const getAtt = (value as Record<string, unknown>)['Fn::GetAtt'];
  if (Array.isArray(getAtt) && getAtt[1] === attribute) return [String(getAtt[0])];
  return Object.values(value).flatMap((item) => getAttTargets(item, attribute));
}

function secretReadResources(document: unknown): unknown[] {
  const statements = (document as { Statement: { Action: unknown; Resource: unknown }[] }).Statement;
  return statements
    .filter((statement) => [statement.Action].flat().includes('secretsmanager:GetSecretValue'))
    .flatMap((statement) => [statement.Resource].flat());
}
