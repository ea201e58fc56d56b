import Domain
import Testing

/// Random clusters small enough that ties, full dimensions and zero requests are common.
enum RandomCluster {
    static let priorities: [Int32] = [.min, -1, 0, 1, 2, .max]

    /// Any snapshot whose requests each fit the capacity, including unsettled and overcommitted ones.
    static func arbitrary(_ rng: inout SplitMix64, maxDeployments: Int = 12) -> ClusterSnapshot {
        let capacity = Resources(
            ram: .random(in: 0...12, using: &rng),
            cpu: .random(in: 0...12, using: &rng),
            gpu: .random(in: 0...3, using: &rng)
        )
        let count = Int.random(in: 0...maxDeployments, using: &rng)
        let seqs = Array(Int64(1)...Int64(count + 1)).shuffled(using: &rng)
        let active = (0..<count).map { index in
            ActiveDeployment(
                id: Int64(index + 1),
                priority: priorities.randomElement(using: &rng)!,
                seq: seqs[index],
                request: request(fitting: capacity, &rng),
                isRunning: .random(using: &rng)
            )
        }
        return ClusterSnapshot(capacity: capacity, active: active)
    }

    /// A cluster whose state is its desired set, as after every committed change.
    static func settled(_ rng: inout SplitMix64) -> ClusterSnapshot {
        let snapshot = arbitrary(&rng)
        return snapshot.applying(ReferenceScheduler.plan(for: snapshot))
    }

    /// A new pending deployment, created after every deployment in `snapshot`.
    static func newDeployment(for snapshot: ClusterSnapshot, _ rng: inout SplitMix64) -> ActiveDeployment {
        ActiveDeployment(
            id: (snapshot.active.map(\.id).max() ?? 0) + 1,
            priority: priorities.randomElement(using: &rng)!,
            seq: (snapshot.active.map(\.seq).max() ?? 0) + 1,
            request: request(fitting: snapshot.capacity, &rng),
            isRunning: false
        )
    }

    /// A settled cluster, one of its running deployments, the cluster once that one completed, and the first pending
    /// deployment ordered after it (the queue head the completion meets); nil when nothing runs.
    static func completion(_ rng: inout SplitMix64) -> (
        settled: ClusterSnapshot, completed: ActiveDeployment, after: ClusterSnapshot, head: ActiveDeployment?
    )? {
        let settled = RandomCluster.settled(&rng)
        guard let completed = settled.running.randomElement(using: &rng) else { return nil }
        let after = settled.removing(id: completed.id)
        let head = after.pending.filter { completed.schedulesBefore($0) }.min { $0.schedulesBefore($1) }
        return (settled, completed, after, head)
    }

    static func request(fitting capacity: Resources, _ rng: inout SplitMix64) -> Resources {
        Resources(
            ram: .random(in: 0...capacity.ram, using: &rng),
            cpu: .random(in: 0...capacity.cpu, using: &rng),
            gpu: .random(in: 0...capacity.gpu, using: &rng)
        )
    }
}

extension ClusterSnapshot {
    var running: [ActiveDeployment] { active.filter(\.isRunning) }
    var pending: [ActiveDeployment] { active.filter { !$0.isRunning } }

    func sum(_ deployments: [ActiveDeployment]) -> Resources {
        deployments.map(\.request).reduce(Resources(), +)
    }

    func deployment(_ id: Int64) -> ActiveDeployment {
        active.first { $0.id == id }!
    }

    /// No more than any pending request in every dimension; nil when nothing is pending.
    var smallestPending: Resources? {
        guard !pending.isEmpty else { return nil }
        return Resources(
            ram: pending.map(\.request.ram).min()!, cpu: pending.map(\.request.cpu).min()!,
            gpu: pending.map(\.request.gpu).min()!)
    }

    /// The next `size` pending deployments ordered after `cursor` that fit in `room`, in scheduling order.
    func pendingBatch(after cursor: ActiveDeployment, fitting room: Resources, size: Int) -> [ActiveDeployment] {
        Array(
            pending.filter { cursor.schedulesBefore($0) && $0.request.fits(in: room) }
                .sorted { $0.schedulesBefore($1) }.prefix(size))
    }

    /// Loads what a change to a settled cluster can affect, following the recipe of `Scheduler.plan(for:)`: the
    /// running deployments and `change` (if it is still in the cluster), then pages of the pending deployments ordered
    /// after the cursor that fit in the headroom.
    func affectedPart(by change: ActiveDeployment, pageSize: Int) -> ClusterSnapshot {
        var loaded = ClusterSnapshot(capacity: capacity, active: active.filter { $0.isRunning || $0.id == change.id })
        var cursor = change
        while true {
            let room = Scheduler.headroom(for: loaded, after: cursor)
            let page =
                pending
                .filter { cursor.schedulesBefore($0) && $0.request.fits(in: room) }
                .sorted { $0.schedulesBefore($1) }
                .prefix(pageSize)
            guard let last = page.last else { return loaded }
            loaded.active += page
            cursor = last
        }
    }
}

@Suite struct SchedulerPropertyTests {
    static let runs: UInt64 = 3000

    @Test func planMatchesTheReferenceOnArbitraryClusters() {
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let snapshot = RandomCluster.arbitrary(&rng)
            #expect(Scheduler.plan(for: snapshot) == ReferenceScheduler.plan(for: snapshot), "seed \(seed)")
        }
    }

    @Test func applyingAPlanSettlesTheCluster() {
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let snapshot = RandomCluster.arbitrary(&rng)
            let after = snapshot.applying(Scheduler.plan(for: snapshot))
            #expect(Scheduler.plan(for: after) == SchedulingPlan(), "seed \(seed)")
            #expect(after.sum(after.running).fits(in: after.capacity), "seed \(seed)")
        }
    }

    @Test func noWaitingDeploymentFitsAfterEvictingEveryLowerPriority() {
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let snapshot = RandomCluster.arbitrary(&rng)
            let after = snapshot.applying(Scheduler.plan(for: snapshot))
            for waiting in after.pending {
                let heldAtOrAbove = after.sum(after.running.filter { $0.priority >= waiting.priority })
                #expect(!waiting.request.fits(in: after.capacity - heldAtOrAbove), "seed \(seed) id \(waiting.id)")
            }
        }
    }

    @Test func waitingDeploymentsDoNotFitBehindTheHigherOrderedRunningOnes() {
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let snapshot = RandomCluster.arbitrary(&rng)
            let after = snapshot.applying(Scheduler.plan(for: snapshot))
            for waiting in after.pending {
                let ahead = after.sum(after.running.filter { $0.schedulesBefore(waiting) })
                #expect(!waiting.request.fits(in: after.capacity - ahead), "seed \(seed) id \(waiting.id)")
            }
        }
    }

    @Test func victimsLoseTheirPlaceOnlyToAStrictlyHigherPriority() {
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let snapshot = RandomCluster.arbitrary(&rng)
            guard snapshot.sum(snapshot.running).fits(in: snapshot.capacity) else { continue }
            let plan = Scheduler.plan(for: snapshot)
            for victim in plan.preempt {
                let taker = plan.preemptedBy[victim].map(snapshot.deployment)
                #expect(taker.map { $0.priority > snapshot.deployment(victim).priority } == true, "seed \(seed)")
                #expect(taker.map { plan.start.contains($0.id) } == true, "seed \(seed)")
            }
        }
    }

    @Test func completionPreemptsOnlyLowerPrioritiesThanTheCompletedOne() {
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let settled = RandomCluster.settled(&rng)
            guard let completed = settled.running.randomElement(using: &rng) else { continue }
            let plan = Scheduler.plan(for: settled.removing(id: completed.id))
            for victim in plan.preempt {
                #expect(settled.deployment(victim).priority < completed.priority, "seed \(seed)")
            }
        }
    }

    @Test func completionInASinglePriorityClusterNeverPreempts() {
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            var snapshot = RandomCluster.arbitrary(&rng)
            for index in snapshot.active.indices { snapshot.active[index].priority = 7 }
            let settled = snapshot.applying(ReferenceScheduler.plan(for: snapshot))
            guard let completed = settled.running.randomElement(using: &rng) else { continue }
            #expect(Scheduler.plan(for: settled.removing(id: completed.id)).preempt.isEmpty, "seed \(seed)")
        }
    }

    /// Why cancelling a pending deployment writes nothing but its own row (`ClusterScheduler.cancel`).
    @Test func cancellingAPendingDeploymentOfASettledClusterChangesNothingElse() {
        var cancelled = 0
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let settled = RandomCluster.settled(&rng)
            guard let waiting = settled.pending.randomElement(using: &rng) else { continue }
            cancelled += 1
            #expect(ReferenceScheduler.plan(for: settled.removing(id: waiting.id)) == SchedulingPlan(), "seed \(seed)")
        }
        #expect(cancelled > Int(Self.runs) / 4)
    }

    @Test func planDependsOnlyOnTheDeploymentsNotTheirOrder() {
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let snapshot = RandomCluster.arbitrary(&rng)
            let shuffled = ClusterSnapshot(capacity: snapshot.capacity, active: snapshot.active.shuffled(using: &rng))
            #expect(Scheduler.plan(for: shuffled) == Scheduler.plan(for: snapshot), "seed \(seed)")
        }
    }

    @Test func addingToASettledClusterMatchesTheFullPass() {
        var fastPathsTaken = 0
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let settled = RandomCluster.settled(&rng)
            let new = RandomCluster.newDeployment(for: settled, &rng)
            let expected = ReferenceScheduler.plan(for: settled.adding(new))
            #expect(Scheduler.plan(adding: new, to: settled) == expected, "seed \(seed)")
            if new.request.fits(in: settled.available) { fastPathsTaken += 1 }

            let heldAtOrAbove = settled.sum(settled.running.filter { $0.priority >= new.priority })
            let starts = Scheduler.startsWhenCreated(
                new.request,
                capacity: settled.capacity,
                runningAtOrAbovePriority: heldAtOrAbove
            )
            #expect(starts == expected.start.contains(new.id), "seed \(seed)")
        }
        #expect(fastPathsTaken > 0 && fastPathsTaken < Int(Self.runs))
    }

    @Test func planOverTheAffectedPartMatchesTheFullPassAfterCreation() {
        var deploymentsLeftOut = 0
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let settled = RandomCluster.settled(&rng)
            let new = RandomCluster.newDeployment(for: settled, &rng)
            let full = settled.adding(new)
            let part = full.affectedPart(by: new, pageSize: .random(in: 1...3, using: &rng))
            #expect(Scheduler.plan(for: part) == ReferenceScheduler.plan(for: full), "seed \(seed)")
            deploymentsLeftOut += full.active.count - part.active.count
        }
        #expect(deploymentsLeftOut > 0)
    }

    @Test func planOverTheAffectedPartMatchesTheFullPassAfterCompletion() {
        var deploymentsLeftOut = 0
        for seed in 0..<Self.runs {
            var rng = SplitMix64(seed: seed)
            let settled = RandomCluster.settled(&rng)
            guard let completed = settled.running.randomElement(using: &rng) else { continue }
            let full = settled.removing(id: completed.id)
            let part = full.affectedPart(by: completed, pageSize: .random(in: 1...3, using: &rng))
            #expect(Scheduler.plan(for: part) == ReferenceScheduler.plan(for: full), "seed \(seed)")
            deploymentsLeftOut += full.active.count - part.active.count
        }
        #expect(deploymentsLeftOut > 0)
    }

    @Test func readingTheRunningTailDecidesAndPlansLikeTheFullPass() {
        var waits = 0
        var preempting = 0
        var runningLeftOut = 0
        for seed in 0..<Self.runs * 4 {
            var rng = SplitMix64(seed: seed)
            let settled = RandomCluster.settled(&rng)
            let new = RandomCluster.newDeployment(for: settled, &rng)
            guard !new.request.fits(in: settled.available) else { continue }
            let decision = Scheduler.decide(creating: new, capacity: settled.capacity, available: settled.available) {
                settled.sum(settled.running.filter { $0.priority >= new.priority })
            }
            let batchSize = Int.random(in: 1...3, using: &rng)
            // The running set below the new priority, lowest-ordered first, served in batches after a cursor.
            let tail = settled.running.filter { $0.priority < new.priority }.sorted { $1.schedulesBefore($0) }
            var part = Scheduler.partForPreempting(new, available: settled.available) { after in
                let start = after.map { cursor in tail.firstIndex { $0.id == cursor.id }! + 1 } ?? 0
                return Array(tail[start...].prefix(batchSize))
            }
            let starts = new.request.fits(in: part.snapshot.capacity)
            #expect(starts == (decision == .fullPass), "seed \(seed)")
            guard starts else {
                waits += 1
                continue
            }
            preempting += 1
            Scheduler.addPending(to: &part, smallest: settled.smallestPending) { after, room in
                settled.pendingBatch(after: after, fitting: room, size: batchSize)
            }
            let full = settled.adding(new)
            #expect(Scheduler.plan(for: part.snapshot) == ReferenceScheduler.plan(for: full), "seed \(seed)")
            runningLeftOut += settled.running.count - part.snapshot.running.count
        }
        #expect(waits > 100 && preempting > 100)
        #expect(runningLeftOut > 0)
    }

    @Test func completionReadsOnlyTheRunningBelowTheQueueHeadAndMatchesTheFullPass() {
        var withHead = 0
        var runningLeftOut = 0
        for seed in 0..<Self.runs * 2 {
            var rng = SplitMix64(seed: seed)
            guard let (settled, completed, full, head) = RandomCluster.completion(&rng) else { continue }
            let batchSize = Int.random(in: 1...3, using: &rng)
            let below = head.map { head in settled.running.filter { $0.priority < head.priority } } ?? []
            let part = Scheduler.partForCompleting(
                completed, available: settled.available, head: head, runningBelowHead: below)
            guard var part else {
                #expect(ReferenceScheduler.plan(for: full) == SchedulingPlan(), "seed \(seed)")
                continue
            }
            withHead += 1
            Scheduler.addPending(to: &part, smallest: full.smallestPending) { after, room in
                full.pendingBatch(after: after, fitting: room, size: batchSize)
            }
            #expect(Scheduler.plan(for: part.snapshot) == ReferenceScheduler.plan(for: full), "seed \(seed)")
            runningLeftOut += full.running.count - part.snapshot.running.count
        }
        #expect(withHead > 100)
        #expect(runningLeftOut > 0)
    }

    @Test func swappingWithTheLowestRunningDeploymentMatchesTheFullPass() {
        var swaps = 0
        for seed in 0..<Self.runs * 4 {
            var rng = SplitMix64(seed: seed)
            let settled = RandomCluster.settled(&rng)
            let new = RandomCluster.newDeployment(for: settled, &rng)
            let below = settled.running.filter { $0.priority < new.priority }
            guard let lowest = below.max(by: { $0.schedulesBefore($1) }) else { continue }
            guard
                let plan = Scheduler.planSwapping(
                    new, available: settled.available, lowest: lowest, smallestPending: settled.smallestPending)
            else { continue }
            swaps += 1
            #expect(plan == ReferenceScheduler.plan(for: settled.adding(new)), "seed \(seed)")
        }
        #expect(swaps > 100)
    }

    @Test func completionDecidedAtTheQueueHeadMatchesTheFullPass() {
        var admitted = 0
        var nothing = 0
        for seed in 0..<Self.runs * 4 {
            var rng = SplitMix64(seed: seed)
            guard let (settled, completed, full, head) = RandomCluster.completion(&rng) else { continue }
            if let head, full.running.contains(where: { $0.priority < head.priority }) { continue }
            let others = head.map { full.removing(id: $0.id) } ?? full
            guard
                let plan = Scheduler.planAtQueueHead(
                    after: completed, available: settled.available, head: head,
                    smallestOtherPending: others.smallestPending)
            else { continue }
            if plan.start.isEmpty { nothing += 1 } else { admitted += 1 }
            #expect(plan == ReferenceScheduler.plan(for: full), "seed \(seed)")
        }
        #expect(admitted > 100 && nothing > 100)
    }

    /// Creates, completes and cancels deployments at random, always through the paths the service uses.
    static func simulate(seed: UInt64, steps: Int) -> [ClusterSnapshot] {
        var rng = SplitMix64(seed: seed)
        var cluster = RandomCluster.arbitrary(&rng, maxDeployments: 0)
        var history: [ClusterSnapshot] = []
        for _ in 0..<steps {
            let plan: SchedulingPlan
            if cluster.active.isEmpty || Int.random(in: 0..<3, using: &rng) > 0 {
                let new = RandomCluster.newDeployment(for: cluster, &rng)
                plan = Scheduler.plan(adding: new, to: cluster)
                cluster = cluster.adding(new)
            } else {
                cluster = cluster.removing(id: cluster.active.randomElement(using: &rng)!.id)
                plan = Scheduler.plan(for: cluster)
            }
            #expect(plan == ReferenceScheduler.plan(for: cluster), "seed \(seed)")
            cluster = cluster.applying(plan)
            history.append(cluster)
        }
        return history
    }

    @Test func sameSequenceOfChangesGivesIdenticalStates() {
        for seed in 0..<UInt64(100) {
            #expect(Self.simulate(seed: seed, steps: 60) == Self.simulate(seed: seed, steps: 60), "seed \(seed)")
        }
    }
}
