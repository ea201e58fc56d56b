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

/// The queue view's page from PostgreSQL (Redis down) has the snapshot page's semantics.
@Suite struct QueuePageTests {
    /// 40 deployments of one cluster: both ends of the priority range and ties, running and pending ones of each
    /// priority, `seq`s running against creation order.
    private static let priorities: [Int32] = [.min, -1, 0, 1, .max]
    private static let active: [ActiveDeployment] = (0..<40).map { (index: Int) -> ActiveDeployment in
        ActiveDeployment(
            id: Int64(index + 1), priority: priorities[index % 5], seq: Int64(40 - index), request: Resources(ram: 1),
            isRunning: (index / 5) % 2 == 0)
    }

    @Test func cursorsOrderLikeTheScheduler() {
        for a in QueuePageTests.active {
            for b in QueuePageTests.active where a.id != b.id {
                #expect(DeploymentQueue.Cursor(a).precedes(b) == a.schedulesBefore(b), "\(a) \(b)")
            }
        }
    }

    @Test func pagesWalkTheClusterInSchedulingOrderWithQueuePositions() {
        let record = ClusterRecord(
            version: 7, capacity: Resources(ram: 100), available: Resources(ram: 3),
            active: QueuePageTests.active.reversed())
        let ordered = QueuePageTests.active.sorted { $0.schedulesBefore($1) }
        for limit in [1, 3, 7, 40, 100] {
            var seen: [(deployment: ActiveDeployment, position: Int64?)] = []
            var cursor: DeploymentQueue.Cursor?
            repeat {
                let page = DeploymentQueue.page(of: record, after: cursor, limit: limit)
                #expect(page.entries.count <= limit && page.version == 7 && page.available.ram == 3)
                #expect(page.runningCount + page.pendingCount == 40)
                seen += page.entries
                cursor = page.next.flatMap { DeploymentQueue.Cursor($0.text) }
            } while cursor != nil
            #expect(seen.map(\.deployment.id) == ordered.map(\.id), "limit \(limit)")
            #expect(seen.compactMap(\.position) == Array(1...Int64(ordered.filter { !$0.isRunning }.count)))
        }
    }
}
