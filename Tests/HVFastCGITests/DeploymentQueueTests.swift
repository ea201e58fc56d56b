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
    @Test func cursorsOrderLikeTheScheduler() {
        var random = Seeded(state: 2026)
        for _ in 0..<2000 {
            let a = QueuePageTests.deployment(&random)
            let b = QueuePageTests.deployment(&random)
            guard a.seq != b.seq else { continue }
            #expect(DeploymentQueue.Cursor(a).precedes(b) == a.schedulesBefore(b), "\(a) \(b)")
        }
    }

    @Test func pagesWalkTheClusterInSchedulingOrderWithQueuePositions() {
        var random = Seeded(state: 2026)
        let active = (1...40).map { seq in
            var deployment = QueuePageTests.deployment(&random)
            deployment.seq = Int64(seq)
            deployment.id = Int64(seq) * 10
            return deployment
        }
        let record = ClusterRecord(
            version: 7, capacity: Resources(ram: 100), available: Resources(ram: 3), active: active.shuffled())
        let ordered = active.sorted { $0.schedulesBefore($1) }
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

    private static func deployment(_ random: inout Seeded) -> ActiveDeployment {
        ActiveDeployment(
            id: .random(in: 1...1000, using: &random),
            priority: [Int32.min, -1, 0, 1, .max].randomElement(using: &random)!,
            seq: .random(in: 1...50, using: &random), request: Resources(ram: 1), isRunning: .random(using: &random))
    }
}

/// SplitMix64, so that every run draws the same cases.
private struct Seeded: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
