import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { type RouteDefinition, routes } from '../../functions/routes';
import { ChatProxyStack } from '../../infra/chat-proxy-stack';
import { readStackName } from '../../infra/config';

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
  // Named as infra/app.ts names it, so a `stackName` in the context works here too.
  const stack = new ChatProxyStack(app, readStackName(app.node), { env: testEnv });
  return { app, stack, template: Template.fromStack(stack) };
}

/**
 * What `$context.error.validationErrorString` renders as: JSON-escaped, but not quoted, as a
 * deployed API answers a body without `content`.
 */
export const SAMPLE_VALIDATION_ERROR = String.raw`[object has missing required properties ([\"content\"])]`;

/** One rule's findings in CDK's validation report. */
export interface ReportedViolation {
  readonly ruleName: string;
  readonly violatingConstructs: readonly { readonly constructPath: string }[];
  /** Set on acknowledged findings. */
  readonly reason?: string;
  readonly acknowledgedAt?: string;
}

export interface NagReport {
  /** Findings nobody acknowledged: each fails `cdk synth`. */
  readonly violations: readonly ReportedViolation[];
  /** Findings acknowledged with `Validations.of(construct).acknowledge()`, with their reasons. */
  readonly acknowledged: readonly ReportedViolation[];
}

/**
 * Synthesizes the app as `cdk synth` does, AWS Solutions checks included (bundling skipped), and
 * returns their report. In tests CDK throws on an unacknowledged error instead of writing the
 * report, so the checks run on the app directly and the report is read back from the assembly.
 */
export function synthesizeWithNag(context: Record<string, unknown> = {}): NagReport {
  const app = new App({
    context: {
      ...featureFlags,
      'aws:cdk:bundling-stacks': [],
      ...context,
      '@aws-cdk/core:failSynthOnValidationErrors': false,
    },
  });
  new ChatProxyStack(app, readStackName(app.node), { env: testEnv });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const assembly = app.synth();
  const report = JSON.parse(readFileSync(join(assembly.directory, 'validation-report.json'), 'utf8')) as {
    pluginReports: {
      pluginName: string;
      violations: ReportedViolation[];
      suppressedViolations?: ReportedViolation[];
    }[];
  };
  const nag = report.pluginReports.filter((plugin) => plugin.pluginName === 'AwsSolutions');
  return {
    violations: nag.flatMap((plugin) => plugin.violations),
    acknowledged: nag.flatMap((plugin) => plugin.suppressedViolations ?? []),
  };
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
  /** The properties of the function's role. */
  readonly role: Record<string, unknown>;
  /** Every statement of the policies attached to the function's role. */
  readonly statements: readonly PolicyStatement[];
}

interface PolicyStatement {
  readonly Effect: string;
  readonly Action: unknown;
  readonly Resource: unknown;
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
    const statements = ofType('AWS::IAM::Policy')
      .filter(([, policy]) => (policy.Properties.Roles as unknown[]).some((role) => isRef(role, roleId)))
      .flatMap(
        ([, policy]) => (policy.Properties.PolicyDocument as { Statement: PolicyStatement[] }).Statement,
      );
    byRoute.set(route.id, {
      route,
      method: method.method,
      path: method.path,
      apiKeyRequired: method.apiKeyRequired,
      functionId: method.functionId,
      integration: method.integration,
      function: fn.Properties,
      environment: environment ?? {},
      readableSecrets: statements
        .filter((statement) => [statement.Action].flat().includes('secretsmanager:GetSecretValue'))
        .flatMap((statement) => [statement.Resource].flat()),
      role: (roleId === undefined ? undefined : resources[roleId]?.Properties) ?? {},
      statements,
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
