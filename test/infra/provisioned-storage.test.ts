import { Match } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { routes } from '../../functions/routes';
import { loadRedisConfig } from '../../functions/shared/config';
import { memoryDbName } from '../../infra/constructs/memorydb-store';
import { APP_USER_ACCESS_STRING } from '../../infra/store-access';
import { resourcesByRoute, synthesize } from './synth';

type Template = ReturnType<typeof synthesize>['template'];
type Resources = Record<string, { Type: string; Properties: Record<string, unknown>; DependsOn?: string[] }>;

function resourcesOf(template: Template): Resources {
  return (template.toJSON() as { Resources: Resources }).Resources;
}

function idsOf(template: Template, type: string, properties: Record<string, unknown> = {}): string[] {
  return Object.keys(template.findResources(type, { Properties: Match.objectLike(properties) }));
}

describe('ChatProxyStack with storage "provisioned"', () => {
  const { template } = synthesize({ storage: 'provisioned' });
  const resources = resourcesOf(template);
  const byRoute = resourcesByRoute(template);
  const [functionSg] = idsOf(template, 'AWS::EC2::SecurityGroup', {
    GroupDescription: Match.stringLikeRegexp('^Chat proxy functions'),
  });
  const [storeSg] = idsOf(template, 'AWS::EC2::SecurityGroup', {
    GroupDescription: Match.stringLikeRegexp('^Chat proxy MemoryDB'),
  });
  const [cluster] = Object.values(template.findResources('AWS::MemoryDB::Cluster'));
  const subnetsOfType = (type: 'Public' | 'Functions' | 'Store') =>
    Object.entries(resources)
      .filter(
        ([id, resource]) => resource.Type === 'AWS::EC2::Subnet' && id.startsWith(`NetworkVpc${type}Subnet`),
      )
      .map(([id]) => id);

  describe('network', () => {
    it('creates a VPC over 2 Availability Zones, with public, function and store subnets in each', () => {
      template.resourceCountIs('AWS::EC2::VPC', 1);
      for (const type of ['Public', 'Functions', 'Store'] as const) {
        const subnets = subnetsOfType(type);
        expect(subnets, type).toHaveLength(2);
        const zones = subnets.map((id) => JSON.stringify(resources[id]?.Properties.AvailabilityZone));
        expect(new Set(zones).size, type).toBe(2);
      }
    });

    it('routes the function subnets to the internet through a NAT gateway per zone, the store subnets nowhere', () => {
      template.resourceCountIs('AWS::EC2::NatGateway', 2);
      const routesOut = Object.values(resources).filter((resource) => resource.Type === 'AWS::EC2::Route');
      const routeTables = (prefix: string) =>
        routesOut.filter((route) =>
          JSON.stringify(route.Properties.RouteTableId).includes(`NetworkVpc${prefix}Subnet`),
        );

      expect(routeTables('Functions')).toHaveLength(2);
      for (const route of routeTables('Functions')) expect(route.Properties.NatGatewayId).toBeDefined();
      expect(routeTables('Store')).toHaveLength(0);
    });

    it('can run with one NAT gateway to save its cost', () => {
      synthesize({ storage: 'provisioned', natGateways: 1 }).template.resourceCountIs(
        'AWS::EC2::NatGateway',
        1,
      );
    });

    it('logs every flow of the VPC to a log group kept for one month', () => {
      template.hasResourceProperties('AWS::EC2::FlowLog', {
        ResourceType: 'VPC',
        TrafficType: 'ALL',
        LogDestinationType: 'cloud-watch-logs',
        LogGroupName: { Ref: Match.stringLikeRegexp('^NetworkFlowLogs') },
      });
      const [flowLogs] = idsOf(template, 'AWS::Logs::LogGroup').filter((id) =>
        id.startsWith('NetworkFlowLogs'),
      );
      expect(resources[flowLogs ?? '']?.Properties.RetentionInDays).toBe(30);
    });

    it('reaches Secrets Manager through a private endpoint that only the functions may use', () => {
      const [endpoint] = Object.values(
        template.findResources('AWS::EC2::VPCEndpoint', {
          Properties: { ServiceName: 'com.amazonaws.us-east-1.secretsmanager' },
        }),
      );
      const endpointSg = JSON.stringify(endpoint?.Properties.SecurityGroupIds).match(/"(Network\w+)"/)?.[1];

      expect(endpoint?.Properties).toMatchObject({ VpcEndpointType: 'Interface', PrivateDnsEnabled: true });
      expect(JSON.stringify(endpoint?.Properties.SubnetIds)).toMatch(/NetworkVpcFunctionsSubnet1.*Functions/);
      const ingress = Object.values(resources).filter(
        (resource) =>
          resource.Type === 'AWS::EC2::SecurityGroupIngress' &&
          JSON.stringify(resource.Properties.GroupId).includes(endpointSg ?? '?'),
      );
      expect(ingress.map((rule) => rule.Properties)).toEqual([
        expect.objectContaining({
          IpProtocol: 'tcp',
          FromPort: 443,
          ToPort: 443,
          SourceSecurityGroupId: { 'Fn::GetAtt': [functionSg, 'GroupId'] },
        }),
      ]);
      expect(resources[endpointSg ?? '']?.Properties.SecurityGroupIngress).toBeUndefined();
    });
  });

  describe('functions', () => {
    it.each(routes)('runs the $id function in the function subnets exactly when it needs Redis', (route) => {
      const vpcConfig = byRoute.get(route.id)?.function.VpcConfig as
        | { SubnetIds: { Ref: string }[]; SecurityGroupIds: unknown[] }
        | undefined;

      if (!route.needs.includes('redis')) {
        expect(vpcConfig).toBeUndefined();
        return;
      }
      expect(vpcConfig?.SubnetIds.map((subnet) => subnet.Ref).sort()).toEqual(
        subnetsOfType('Functions').sort(),
      );
      expect(vpcConfig?.SecurityGroupIds).toEqual([{ 'Fn::GetAtt': [functionSg, 'GroupId'] }]);
    });

    it('keeps the health check out of the VPC, with no secret and no Redis', () => {
      const health = byRoute.get('Health');

      expect(health?.function.VpcConfig).toBeUndefined();
      expect(health?.readableSecrets).toEqual([]);
      expect(health?.environment).not.toHaveProperty('REDIS_SECRET_ARN');
    });

    it.each(routes)('tells the $id function that Redis is a cluster exactly when it uses Redis', (route) => {
      expect(byRoute.get(route.id)?.environment.REDIS_CLUSTER).toBe(
        route.needs.includes('redis') ? 'true' : undefined,
      );
    });

    it('gives the functions in the VPC the AWS-managed policy Lambda needs for their network interfaces', () => {
      for (const { route, role } of byRoute.values()) {
        const managed = JSON.stringify(role.ManagedPolicyArns ?? []);
        expect(managed.includes('AWSLambdaVPCAccessExecutionRole'), route.id).toBe(
          route.needs.includes('redis'),
        );
        expect(managed, route.id).not.toContain('AWSLambdaBasicExecutionRole');
      }
    });

    it('lets the functions out on HTTPS and to the store port, and nothing else', () => {
      const sg = resources[functionSg ?? '']?.Properties;
      const egress = Object.values(resources)
        .filter(
          (resource) =>
            resource.Type === 'AWS::EC2::SecurityGroupEgress' &&
            JSON.stringify(resource.Properties.GroupId).includes(functionSg ?? '?'),
        )
        .map((rule) => [rule.Properties.FromPort, rule.Properties.ToPort]);

      expect(sg?.SecurityGroupEgress).toEqual([
        expect.objectContaining({ CidrIp: '0.0.0.0/0', IpProtocol: 'tcp', FromPort: 443, ToPort: 443 }),
      ]);
      expect(egress.sort()).toEqual([
        [443, 443],
        [6379, 6379],
      ]);
    });
  });

  describe('store', () => {
    it('is a MemoryDB Valkey cluster with TLS, a replica per shard and daily snapshots', () => {
      expect(cluster?.Properties).toMatchObject({
        Engine: 'valkey',
        TLSEnabled: true,
        Port: 6379,
        NodeType: 'db.t4g.small',
        NumShards: 1,
        NumReplicasPerShard: 1,
        SnapshotRetentionLimit: 7,
        FinalSnapshotName: 'chatproxy-final',
        ACLName: 'chatproxy-acl',
        SecurityGroupIds: [{ 'Fn::GetAtt': [storeSg, 'GroupId'] }],
      });
    });

    it('sizes the cluster from context', () => {
      const sized = synthesize({
        storage: 'provisioned',
        memoryDbNodeType: 'db.r7g.large',
        memoryDbShards: 2,
        memoryDbReplicasPerShard: 2,
      }).template;

      sized.hasResourceProperties('AWS::MemoryDB::Cluster', {
        NodeType: 'db.r7g.large',
        NumShards: 2,
        NumReplicasPerShard: 2,
      });
    });

    it('places the cluster in the store subnets, which have no route out', () => {
      template.hasResourceProperties('AWS::MemoryDB::SubnetGroup', {
        SubnetGroupName: cluster?.Properties.SubnetGroupName,
        SubnetIds: subnetsOfType('Store').map((id) => ({ Ref: id })),
      });
    });

    it('accepts connections on 6379 from the functions only', () => {
      const ingress = Object.values(resources).filter(
        (resource) =>
          resource.Type === 'AWS::EC2::SecurityGroupIngress' &&
          JSON.stringify(resource.Properties.GroupId).includes(storeSg ?? '?'),
      );

      expect(resources[storeSg ?? '']?.Properties.SecurityGroupIngress).toBeUndefined();
      expect(ingress.map((rule) => rule.Properties)).toEqual([
        expect.objectContaining({
          IpProtocol: 'tcp',
          FromPort: 6379,
          ToPort: 6379,
          SourceSecurityGroupId: { 'Fn::GetAtt': [functionSg, 'GroupId'] },
        }),
      ]);
    });

    it('lets in one ACL user, whose password is a reference to a generated secret', () => {
      const [passwordSecret] = idsOf(template, 'AWS::SecretsManager::Secret', {
        Description: Match.stringLikeRegexp('password of the MemoryDB user'),
      });

      template.hasResourceProperties('AWS::MemoryDB::ACL', {
        ACLName: 'chatproxy-acl',
        UserNames: ['chatproxy-app'],
      });
      template.hasResourceProperties('AWS::MemoryDB::User', {
        UserName: 'chatproxy-app',
        // The access string cluster.test.ts runs every handler under; never the whole store.
        AccessString: APP_USER_ACCESS_STRING,
        AuthenticationMode: {
          Type: 'password',
          Passwords: [
            {
              'Fn::Join': ['', ['{{resolve:secretsmanager:', { Ref: passwordSecret }, ':SecretString:::}}']],
            },
          ],
        },
      });
      template.hasResourceProperties('AWS::SecretsManager::Secret', {
        Description: Match.stringLikeRegexp('password of the MemoryDB user'),
        GenerateSecretString: { PasswordLength: 40, ExcludePunctuation: true, IncludeSpace: false },
      });
    });

    it('builds the rediss:// URL secret the functions read from the password reference and the endpoint', () => {
      const [passwordSecret] = idsOf(template, 'AWS::SecretsManager::Secret', {
        Description: Match.stringLikeRegexp('password of the MemoryDB user'),
      });
      const [urlSecret] = idsOf(template, 'AWS::SecretsManager::Secret', {
        Description: Match.stringLikeRegexp('rediss:// URL of the MemoryDB cluster'),
      });
      const [clusterId] = idsOf(template, 'AWS::MemoryDB::Cluster');

      expect(resources[urlSecret ?? '']?.Properties.SecretString).toEqual({
        'Fn::Join': [
          '',
          [
            'rediss://chatproxy-app:{{resolve:secretsmanager:',
            { Ref: passwordSecret },
            ':SecretString:::}}@',
            { 'Fn::GetAtt': [clusterId, 'ClusterEndpoint.Address'] },
            ':6379',
          ],
        ],
      });
      for (const route of routes.filter((each) => each.needs.includes('redis'))) {
        expect(byRoute.get(route.id)?.environment.REDIS_SECRET_ARN, route.id).toEqual({ Ref: urlSecret });
        expect(byRoute.get(route.id)?.readableSecrets, route.id).toContainEqual({ Ref: urlSecret });
        expect(byRoute.get(route.id)?.readableSecrets, route.id).not.toContainEqual({ Ref: passwordSecret });
      }
    });

    it("lets the store user reach exactly the functions' keys: their default prefix, which the stack keeps", () => {
      const { keyPrefix } = loadRedisConfig({ REDIS_URL: 'redis://localhost' });
      expect(APP_USER_ACCESS_STRING.split(' ').filter((rule) => rule.startsWith('~'))).toEqual([
        `~${keyPrefix}:*`,
      ]);
      for (const { route, environment } of byRoute.values()) {
        expect(environment, route.id).not.toHaveProperty('REDIS_KEY_PREFIX');
      }
    });

    it('puts no secret value in the template: every secret is generated or a deploy-time reference', () => {
      const secrets = Object.values(template.findResources('AWS::SecretsManager::Secret'));

      expect(secrets).toHaveLength(3);
      for (const secret of secrets) {
        const value = secret.Properties.SecretString;
        if (value === undefined) {
          expect(secret.Properties.GenerateSecretString).toBeDefined();
        } else {
          // Only the literal user name and the resolved parts: no password-like text.
          const literals = (value['Fn::Join'][1] as unknown[])
            .filter((part) => typeof part === 'string')
            .join('');
          expect(literals).toBe('rediss://chatproxy-app:{{resolve:secretsmanager::SecretString:::}}@:6379');
        }
      }
      expect(JSON.stringify(template.toJSON())).not.toMatch(/"Passwords":\["[^{]/);
    });

    it('outputs the URL and password secrets, and alarms on store memory', () => {
      template.hasOutput('StorePasswordSecretArn', {});
      template.hasOutput('RedisSecretArn', { Description: Match.stringLikeRegexp('MemoryDB') });
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        AlarmName: 'ChatProxy-StoreMemory',
        Threshold: 80,
        Metrics: [
          Match.objectLike({
            MetricStat: Match.objectLike({
              Metric: {
                Namespace: 'AWS/MemoryDB',
                MetricName: 'DatabaseMemoryUsagePercentage',
                Dimensions: [{ Name: 'ClusterName', Value: 'chatproxy' }],
              },
              Stat: 'Maximum',
            }),
          }),
        ],
      });
    });
  });
});

describe('ChatProxyStack with storage "provisioned" and memoryDbAccessString', () => {
  it("gives the functions' user the access string the context sets", () => {
    const { template } = synthesize({ storage: 'provisioned', memoryDbAccessString: 'on ~* &* +@all' });

    template.hasResourceProperties('AWS::MemoryDB::User', { AccessString: 'on ~* &* +@all' });
  });
});

describe('memoryDbName', () => {
  it.each([
    ['ChatProxy', 'chatproxy'],
    ['chat-proxy-prod', 'chat-proxy-prod'],
    ['Chat_Proxy--Staging', 'chat-proxy-staging'],
    ['1st-stack', 'st-stack'],
    ['A'.repeat(30), 'a'.repeat(30)],
  ])('turns the stack name %s into the MemoryDB name %s', (stackName, expected) => {
    expect(memoryDbName(stackName)).toBe(expected);
  });

  it('gives two long stack names alike in their first characters two names within the limit', () => {
    const first = memoryDbName(`ChatProxy-${'x'.repeat(30)}-staging`);
    const second = memoryDbName(`ChatProxy-${'x'.repeat(30)}-production`);

    expect(first).not.toBe(second);
    for (const name of [first, second]) {
      expect(name).toMatch(/^[a-z][a-z0-9-]{0,29}$/);
      expect(name).not.toMatch(/--/);
    }
  });
});
