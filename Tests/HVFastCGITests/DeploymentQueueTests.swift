import Domain
import Testing

@testable import HVFastCGI

/// The snapshot encoding: members decode to what was encoded, sort in scheduling order, and cursors parse only in the
/// form pages hand out.
@Suite struct DeploymentQueueTests {
    private let deployments = [
        ActiveDeployment(id: 7, priority: .max, seq: 3, request: Resources(ram: 1, cpu: 1500, gpu: 0), isRunning: true),
        ActiveDeployment(id: 9, priority: 0, seq: 1, request: Resources(ram: .max, cpu: 0, gpu: 2), isRunning: false),
        ActiveDeployment(id: 8, priority: 0, seq: 12, request: Resources(), isRunning: false),
        ActiveDeployment(id: 1, priority: .min, seq: .max, request: Resources(ram: 3, cpu: 3, gpu: 3), isRunning: true),
    ]

    @Test func membersDecodeToWhatWasEncodedAndSortInSchedulingOrder() {
        for deployment in deployments {
            let member = DeploymentQueue.member(deployment)
            #expect(DeploymentQueue.deployment(member, running: deployment.isRunning) == deployment, "\(member)")
        }
        let members = deployments.map(DeploymentQueue.member)
        #expect(members == members.sorted())
        #expect(DeploymentQueue.deployment("7ffffffe0000000000000001:x:1:1:1", running: true) == nil)
        #expect(DeploymentQueue.deployment("7ffffffe000000000000001:4:1:1:1", running: true) == nil)
    }

    @Test func cursorsRoundTripAndRejectAnythingElse() throws {
        for deployment in deployments {
            let cursor = DeploymentQueue.Cursor(deployment)
            #expect(DeploymentQueue.Cursor(cursor.text) == cursor)
            #expect(cursor.text.hasSuffix(deployment.isRunning ? "R" : "P"))
        }
        for text in [
            "", "7fffffff", "7ffffffe0000000000000001X", "7FFFFFFE0000000000000001P", "7ffffffe000000000000001gP",
        ] {
            #expect(DeploymentQueue.Cursor(text) == nil, "\(text)")
        }
    }
}
