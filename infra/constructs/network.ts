import { RemovalPolicy } from 'aws-cdk-lib';
import {
  FlowLogDestination,
  FlowLogTrafficType,
  type InterfaceVpcEndpoint,
  InterfaceVpcEndpointAwsService,
  Peer,
  Port,
  SecurityGroup,
  type SubnetSelection,
  SubnetType,
  Vpc,
} from 'aws-cdk-lib/aws-ec2';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { FunctionNetwork } from './route-function';

export interface NetworkProps {
  /**
   * One per Availability Zone keeps OpenAI reachable when a zone fails; one in all saves its cost.
   * @default 2
   */
  readonly natGateways?: number;
  /**
   * @default RetentionDays.ONE_MONTH
   */
  readonly flowLogRetention?: RetentionDays;
}

/**
 * The VPC for a store that lives in one: two Availability Zones, each with a public subnet (for
 * its NAT gateway), a private subnet with a NAT route for the functions (they call OpenAI) and an
 * isolated subnet for the store. Functions reach Secrets Manager through an interface endpoint,
 * without leaving the VPC; flow logs record every connection.
 */
export class Network extends Construct {
  readonly vpc: Vpc;
  /** The functions' security group: HTTPS out (OpenAI, Secrets Manager) and whatever stores allow. */
  readonly functionSecurityGroup: SecurityGroup;
  readonly functionSubnets: SubnetSelection;
  /** Subnets without any route out of the VPC, for the store. */
  readonly storeSubnets: SubnetSelection;
  readonly secretsManagerEndpoint: InterfaceVpcEndpoint;
  readonly flowLogGroup: LogGroup;

  constructor(scope: Construct, id: string, props: NetworkProps = {}) {
    super(scope, id);

    this.vpc = new Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: props.natGateways ?? 2,
      subnetConfiguration: [
        { name: 'Public', subnetType: SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'Functions', subnetType: SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
        { name: 'Store', subnetType: SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
    });
    this.functionSubnets = { subnetType: SubnetType.PRIVATE_WITH_EGRESS };
    this.storeSubnets = { subnetType: SubnetType.PRIVATE_ISOLATED };

    this.flowLogGroup = new LogGroup(this, 'FlowLogs', {
      retention: props.flowLogRetention ?? RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.vpc.addFlowLog('FlowLog', {
      destination: FlowLogDestination.toCloudWatchLogs(this.flowLogGroup),
      trafficType: FlowLogTrafficType.ALL,
    });

    this.functionSecurityGroup = new SecurityGroup(this, 'Functions', {
      vpc: this.vpc,
      description: 'Chat proxy functions: HTTPS out, and the store port to the store only',
      allowAllOutbound: false,
    });
    this.functionSecurityGroup.addEgressRule(
      Peer.anyIpv4(),
      Port.tcp(443),
      'HTTPS to OpenAI (through the NAT gateways) and to AWS APIs',
    );

    this.secretsManagerEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
      service: InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      subnets: this.functionSubnets,
      privateDnsEnabled: true,
      // Only the functions may use it, not everything in the VPC's address range.
      open: false,
    });
    this.secretsManagerEndpoint.connections.allowDefaultPortFrom(
      this.functionSecurityGroup,
      'Secrets Manager from the chat proxy functions',
    );
  }

  /** Where a function that needs the store runs. */
  get functionNetwork(): FunctionNetwork {
    return {
      vpc: this.vpc,
      subnets: this.functionSubnets,
      securityGroups: [this.functionSecurityGroup],
    };
  }
}
