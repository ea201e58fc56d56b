import Domain
import Testing

@Suite struct PendingReasonTests {
    @Test func namesEveryShortDimensionWithCPUInCPUs() {
        #expect(
            Scheduler.pendingReason(
                request: Resources(ram: 1, cpu: 500, gpu: 4), free: Resources(ram: 8, cpu: 0, gpu: 2))
                == "insufficient cpu: needs 0.5, 0.0 free; insufficient gpu: needs 4, 2 free after the deployments ahead of it"
        )
        #expect(
            Scheduler.pendingReason(request: Resources(ram: 8), free: Resources(ram: 5, cpu: 3000, gpu: 1))
                == "insufficient ram: needs 8, 5 free after the deployments ahead of it")
    }

    @Test func nothingShortHasNoReason() {
        #expect(Scheduler.pendingReason(request: Resources(ram: 2, cpu: 2), free: Resources(ram: 2, cpu: 2)) == nil)
    }

    /// What the v1 API computes from PostgreSQL for a pending deployment of a settled cluster, the capacity minus the
    /// running requests of its priority or higher, always leaves it short somewhere: the pass left it out for a reason.
    @Test func everyPendingDeploymentOfASettledClusterHasAReason() {
        for seed in 0..<SchedulerPropertyTests.runs {
            var rng = SplitMix64(seed: seed)
            let settled = RandomCluster.settled(&rng)
            for waiting in settled.pending {
                let ahead = settled.running.filter { $0.priority >= waiting.priority }
                let free = settled.capacity - settled.sum(ahead)
                #expect(
                    Scheduler.pendingReason(request: waiting.request, free: free) != nil,
                    "seed \(seed): deployment \(waiting.id)")
                // Those running ones are exactly the deployments ahead of it that hold resources.
                #expect(
                    Set(ahead.map(\.id))
                        == Set(settled.running.filter { $0.schedulesBefore(waiting) }.map(\.id)), "seed \(seed)")
            }
        }
    }
}
