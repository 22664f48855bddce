import { createHash } from 'node:crypto';
import { Fn, SecretValue, Stack, Validations } from 'aws-cdk-lib';
import {
  Connections,
  type IConnectable,
  type IVpc,
  Port,
  SecurityGroup,
  type SubnetSelection,
} from 'aws-cdk-lib/aws-ec2';
import { CfnACL, CfnCluster, CfnSubnetGroup, CfnUser } from 'aws-cdk-lib/aws-memorydb';
import { Secret } from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { APP_USER_ACCESS_STRING } from '../store-access';

/** The port the cluster listens on (TLS only). */
export const STORE_PORT = 6379;

export interface MemoryDbStoreProps {
  readonly vpc: IVpc;
  /** Subnets for the cluster's nodes, one per Availability Zone it may use. */
  readonly subnets: SubnetSelection;
  /**
   * @default 'db.t4g.small'
   */
  readonly nodeType?: string;
  /**
   * @default 1
   */
  readonly shards?: number;
  /**
   * The functions' user's access string.
   * @default APP_USER_ACCESS_STRING
   */
  readonly accessString?: string;
  /**
   * Replicas per shard, each in another Availability Zone; with none, a failed node is replaced
   * from the transaction log but the store is unavailable meanwhile.
   * @default 1
   */
  readonly replicasPerShard?: number;
  /**
   * Daily snapshots kept, on top of the Multi-AZ transaction log: a way back from a bad write.
   * @default 7
   */
  readonly snapshotRetentionDays?: number;
}

/**
 * A durable Redis-compatible store: an Amazon MemoryDB (Valkey) cluster, TLS only, reachable on
 * its port from the security groups given to `allowFrom` only. Clients authenticate as one ACL
 * user with a generated password, and read `rediss://USER:PASSWORD@ENDPOINT:PORT` from
 * `urlSecret`, which CloudFormation assembles from the password secret at deploy time, so no
 * password is ever in the template.
 */
export class MemoryDbStore extends Construct {
  readonly cluster: CfnCluster;
  readonly clusterName: string;
  readonly userName: string;
  /** The ACL user's password, a plain SecretString. */
  readonly passwordSecret: Secret;
  /** The `rediss://` URL the functions read (`REDIS_SECRET_ARN`). */
  readonly urlSecret: Secret;
  readonly securityGroup: SecurityGroup;
  readonly connections: Connections;

  constructor(scope: Construct, id: string, props: MemoryDbStoreProps) {
    super(scope, id);
    // MemoryDB names are unique per account and Region, like stack names.
    const base = memoryDbName(Stack.of(this).stackName);
    this.clusterName = base;
    this.userName = `${base}-app`;

    this.securityGroup = new SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'Chat proxy MemoryDB cluster: TLS on the store port from the functions only',
      allowAllOutbound: false,
    });
    this.connections = new Connections({
      securityGroups: [this.securityGroup],
      defaultPort: Port.tcp(STORE_PORT),
    });

    const subnetGroup = new CfnSubnetGroup(this, 'SubnetGroup', {
      subnetGroupName: `${base}-subnets`,
      description: 'Chat proxy MemoryDB cluster subnets',
      subnetIds: props.vpc.selectSubnets(props.subnets).subnetIds,
    });

    // Letters and digits only, so the password needs no escaping inside the URL.
    this.passwordSecret = new Secret(this, 'Password', {
      description: `Chat proxy: password of the MemoryDB user ${this.userName}`,
      generateSecretString: { passwordLength: 40, excludePunctuation: true, includeSpace: false },
    });
    const password = this.passwordSecret.secretValue.unsafeUnwrap();

    const user = new CfnUser(this, 'User', {
      userName: this.userName,
      // Only the commands the functions send, on the service's keys (see store-access.ts).
      accessString: props.accessString ?? APP_USER_ACCESS_STRING,
      authenticationMode: { Type: 'password', Passwords: [password] },
    });
    const acl = new CfnACL(this, 'Acl', { aclName: `${base}-acl`, userNames: [this.userName] });
    acl.node.addDependency(user);

    this.cluster = new CfnCluster(this, 'Cluster', {
      clusterName: this.clusterName,
      description: 'Chat proxy: chats, system prompts and idempotency records',
      engine: 'valkey',
      engineVersion: '7.3',
      nodeType: props.nodeType ?? 'db.t4g.small',
      numShards: props.shards ?? 1,
      numReplicasPerShard: props.replicasPerShard ?? 1,
      aclName: acl.aclName,
      subnetGroupName: subnetGroup.subnetGroupName,
      securityGroupIds: [this.securityGroup.securityGroupId],
      tlsEnabled: true,
      port: STORE_PORT,
      autoMinorVersionUpgrade: true,
      snapshotRetentionLimit: props.snapshotRetentionDays ?? 7,
      // Deleting the stack (or replacing the cluster) keeps the data as a snapshot.
      finalSnapshotName: `${base}-final`,
    });
    this.cluster.node.addDependency(acl);
    this.cluster.node.addDependency(subnetGroup);

    this.urlSecret = new Secret(this, 'Url', {
      description:
        'Chat proxy: the rediss:// URL of the MemoryDB cluster with its user and password, built at deploy time',
      secretStringValue: SecretValue.unsafePlainText(
        Fn.join('', [
          'rediss://',
          this.userName,
          ':',
          // A {{resolve:secretsmanager:...}} reference: CloudFormation puts the value in at deploy time.
          password,
          '@',
          this.cluster.attrClusterEndpointAddress,
          `:${STORE_PORT}`,
        ]),
      ),
    });

    for (const secret of [this.passwordSecret, this.urlSecret]) {
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions::AwsSolutions-SMG4',
        reason:
          'MemoryDB has no Secrets Manager rotation function; the README documents the two-password rotation',
      });
    }
  }

  /** Lets `client` connect to the store port. */
  allowFrom(client: IConnectable, description = 'Store port from the chat proxy functions'): void {
    this.connections.allowDefaultPortFrom(client, description);
  }
}

/**
 * A MemoryDB name from the stack name: lowercase letters, digits and single hyphens, starting with
 * a letter, short enough for the suffixes (the limit is 40). A name too long is cut and given a
 * short hash of the whole stack name, so two long stack names alike in their first characters
 * still get two clusters; a name that fits is kept as it is.
 */
export function memoryDbName(stackName: string): string {
  const slug = stackName
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^[^a-z]+/, '')
    .replace(/-+$/, '');
  if (slug === '') return 'chat-proxy';
  if (slug.length <= 30) return slug;
  const hash = createHash('sha256').update(stackName).digest('hex').slice(0, 6);
  return `${slug.slice(0, 23).replace(/-+$/, '')}-${hash}`;
}
