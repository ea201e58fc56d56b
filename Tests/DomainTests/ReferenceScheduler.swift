import Domain

/// The greedy pass of `spec/SCHEDULING.md` written as plainly as possible, sharing no code with `Scheduler`.
enum ReferenceScheduler {
    static func plan(for snapshot: ClusterSnapshot) -> SchedulingPlan {
        let order = snapshot.active.sorted { a, b in
            if a.priority != b.priority { return a.priority > b.priority }
            if a.isRunning != b.isRunning { return a.isRunning }
            return a.seq < b.seq
        }
        var usedRAM: Int64 = 0
        var usedCPU: Int64 = 0
        var usedGPU: Int64 = 0
        var desired: Set<Int64> = []
        for d in order {
            if usedRAM + d.request.ram <= snapshot.capacity.ram
                && usedCPU + d.request.cpu <= snapshot.capacity.cpu
                && usedGPU + d.request.gpu <= snapshot.capacity.gpu
            {
                desired.insert(d.id)
                usedRAM += d.request.ram
                usedCPU += d.request.cpu
                usedGPU += d.request.gpu
            }
        }

        var plan = SchedulingPlan()
        for d in order where !d.isRunning && desired.contains(d.id) {
            plan.start.append(d.id)
        }
        for d in order where d.isRunning && !desired.contains(d.id) {
            plan.preempt.append(d.id)
            // The taker is the last started deployment ordered before the victim.
            let victimPosition = order.firstIndex(of: d)!
            if let taker = order[..<victimPosition].last(where: { plan.start.contains($0.id) }) {
                plan.preemptedBy[d.id] = taker.id
            }
        }
        return plan
    }
}
