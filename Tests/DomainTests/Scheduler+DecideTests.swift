import Domain
import Testing

/// `Scheduler.decide` is the rule the one-statement create computes in SQL, reading nothing beyond the cluster row
/// when the deployment fits.
@Suite struct SchedulerDecideTests {
    private let capacity = Resources(ram: 10, cpu: 10, gpu: 0)

    @Test func fitsInAvailableStartsWithoutAskingForTheSum() {
        var asked = 0
        let decision = Scheduler.decide(
            creating: .deployment(id: 9, priority: 1, ram: 4), capacity: capacity,
            available: Resources(ram: 4, cpu: 10)
        ) {
            asked += 1
            return Resources()
        }
        #expect(decision == .start)
        #expect(asked == 0)
    }

    @Test func doesNotFitEvenAfterEvictingLowerPrioritiesQueues() {
        var asked = 0
        let decision = Scheduler.decide(
            creating: .deployment(id: 9, priority: 1, ram: 5), capacity: capacity,
            available: Resources(ram: 4, cpu: 10)
        ) {
            asked += 1
            return Resources(ram: 6)  // held by priorities ≥ 1
        }
        #expect(decision == .queue)
        #expect(asked == 1)
    }

    @Test func fitsAfterEvictingLowerPrioritiesNeedsTheFullPass() {
        let decision = Scheduler.decide(
            creating: .deployment(id: 9, priority: 5, ram: 5), capacity: capacity,
            available: Resources(ram: 0, cpu: 10)
        ) { Resources(ram: 5) }
        #expect(decision == .fullPass)
    }

    @Test func decisionsAgreeWithTheReferenceOnRandomSettledClusters() {
        var random = SplitMix64(seed: 42)
        for _ in 0..<2_000 {
            let capacity = Resources(ram: Int64(random.next() % 20), cpu: Int64(random.next() % 20), gpu: 0)
            var active: [ActiveDeployment] = []
            for id in Int64(1)..<Int64(1 + random.next() % 8) {
                active.append(
                    .deployment(
                        id: id, priority: Int32(random.next() % 3), ram: Int64(random.next() % 8),
                        cpu: Int64(random.next() % 8)))
            }
            let settled = ClusterSnapshot(capacity: capacity, active: active).applying(
                ReferenceScheduler.plan(for: ClusterSnapshot(capacity: capacity, active: active)))
            let new = ActiveDeployment.deployment(
                id: 100, priority: Int32(random.next() % 3), ram: Int64(random.next() % 8),
                cpu: Int64(random.next() % 8))
            let reference = ReferenceScheduler.plan(
                for: ClusterSnapshot(capacity: capacity, active: settled.active + [new]))
            let decision = Scheduler.decide(creating: new, capacity: capacity, available: settled.available) {
                settled.active.filter { $0.isRunning && $0.priority >= new.priority }.map(\.request)
                    .reduce(Resources(), +)
            }
            switch decision {
            case .start: #expect(reference == SchedulingPlan(start: [new.id]))
            case .queue: #expect(reference == SchedulingPlan())
            case .fullPass: #expect(reference.start.contains(new.id))
            }
        }
    }
}
