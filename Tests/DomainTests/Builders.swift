import Domain
import Testing

// Requests and capacities are in abstract units: `cpu: 2` is 2 millicores, which is all the scheduler sees.

extension ActiveDeployment {
    /// A deployment, pending unless `running`; `seq` defaults to `id` so that ids read as creation order.
    static func deployment(
        id: Int64,
        priority: Int32 = 0,
        seq: Int64? = nil,
        ram: Int64 = 0,
        cpu: Int64 = 0,
        gpu: Int64 = 0,
        running: Bool = false
    ) -> ActiveDeployment {
        ActiveDeployment(
            id: id,
            priority: priority,
            seq: seq ?? id,
            request: Resources(ram: ram, cpu: cpu, gpu: gpu),
            isRunning: running
        )
    }
}

extension ClusterSnapshot {
    static func cluster(
        ram: Int64 = 0,
        cpu: Int64 = 0,
        gpu: Int64 = 0,
        _ active: [ActiveDeployment]
    ) -> ClusterSnapshot {
        ClusterSnapshot(capacity: Resources(ram: ram, cpu: cpu, gpu: gpu), active: active)
    }

    /// The snapshot after the plan is carried out: started deployments run, preempted ones wait again.
    func applying(_ plan: SchedulingPlan) -> ClusterSnapshot {
        var next = self
        for index in next.active.indices {
            if plan.start.contains(next.active[index].id) { next.active[index].isRunning = true }
            if plan.preempt.contains(next.active[index].id) { next.active[index].isRunning = false }
        }
        return next
    }

    func removing(id: Int64) -> ClusterSnapshot {
        ClusterSnapshot(capacity: capacity, active: active.filter { $0.id != id })
    }

    func adding(_ deployment: ActiveDeployment) -> ClusterSnapshot {
        ClusterSnapshot(capacity: capacity, active: active + [deployment])
    }
}

/// One row of a scheduling table.
struct SchedulingCase: Sendable, CustomTestStringConvertible {
    var desc: String
    var snapshot: ClusterSnapshot
    var expected: SchedulingPlan

    var testDescription: String { desc }
}
