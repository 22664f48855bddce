import { describe, expect, it } from 'vitest';
import { type NagReport, synthesizeWithNag } from './synth';

/** Each finding as `rule at construct path`, so a failure names what to fix. */
function findings(violations: NagReport['violations']): string[] {
  return violations.flatMap((violation) =>
    violation.violatingConstructs.map((construct) => `${violation.ruleName} at ${construct.constructPath}`),
  );
}

/** The rule ids acknowledged anywhere in the stack, without their finding details. */
function acknowledgedRules(report: NagReport): string[] {
  return [...new Set(report.acknowledged.map((violation) => violation.ruleName.replace(/\[.*$/, '')))].sort();
}

describe('cdk-nag AwsSolutions checks', () => {
  describe.each([
    { storage: 'external', context: {} },
    { storage: 'provisioned', context: { storage: 'provisioned' } },
    {
      storage: 'external, with CORS, WAF and an alarm e-mail',
      context: {
        corsOrigins: ['https://app.example.com'],
        wafRateLimit: 2000,
        alarmEmail: 'ops@example.com',
      },
    },
  ])('with storage $storage', ({ context }) => {
    const report = synthesizeWithNag(context);

    it('reports no unacknowledged finding', () => {
      expect(findings(report.violations)).toEqual([]);
    });

    it('gives a reason for every acknowledged finding, on or above the construct it concerns', () => {
      expect(report.acknowledged.length).toBeGreaterThan(0);
      for (const finding of report.acknowledged) {
        expect(finding.reason, finding.ruleName).toMatch(/\w{3,}.*\w{3,}/);
        for (const construct of finding.violatingConstructs) {
          expect(
            construct.constructPath.startsWith(`${finding.acknowledgedAt}/`),
            construct.constructPath,
          ).toBe(true);
        }
      }
    });
  });

  it('acknowledges only API key auth, the opt-in WAF, AWS-managed policies and manual secret rotation', () => {
    expect(acknowledgedRules(synthesizeWithNag())).toEqual([
      'AwsSolutions-APIG3',
      'AwsSolutions-APIG4',
      'AwsSolutions-COG4',
      'AwsSolutions-IAM4',
      'AwsSolutions-SMG4',
    ]);
    expect(acknowledgedRules(synthesizeWithNag({ wafRateLimit: 2000 }))).not.toContain('AwsSolutions-APIG3');
  });

  it('acknowledges AWS-managed policies only for the API Gateway logging role and functions in a VPC', () => {
    const managedPolicies = (report: NagReport) =>
      [
        ...new Set(
          report.acknowledged
            .filter((finding) => finding.ruleName.startsWith('AwsSolutions-IAM4'))
            .map((finding) => finding.ruleName),
        ),
      ].sort();

    expect(managedPolicies(synthesizeWithNag())).toEqual([
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
    ]);
    expect(managedPolicies(synthesizeWithNag({ storage: 'provisioned' }))).toEqual([
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]',
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
    ]);
  });
});
