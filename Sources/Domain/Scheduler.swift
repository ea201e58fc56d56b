/// The scheduling policy of `spec/SCHEDULING.md`: a pure function from a cluster snapshot to a plan.
///
/// The desired running set is the greedy pass over the active deployments in scheduling order
/// (`ActiveDeployment.schedulesBefore`): each deployment whose request fits in what the ones admitted before it left
/// free is admitted. Preemption is not a separate algorithm but whatever that pass leaves out.
public enum Scheduler {
    /// The plan that makes the snapshot's deployments equal to the desired running set.
    ///
    /// The pass runs over exactly the deployments in `snapshot`, so the repository may load only the part of the
    /// queue that can change. The plan is the cluster's plan when the snapshot holds every running deployment and
    /// leaves out only pending deployments that the full pass would leave pending: a deployment the pass skips does
    /// not change what is free for any other, so leaving it out changes nothing else. Two ways to know that without
    /// reading a pending deployment `d`:
    ///
    /// 1. The cluster was settled and `d` is ordered before every deployment the change added or removed: the pass
    ///    over the deployments ahead of `d` is the same as before the change, when it left `d` pending.
    /// 2. `d` is ordered after some `position` and does not fit in `headroom(for:after:)` of a snapshot that holds
    ///    every deployment the full pass admits up to `position`: the pass never has more room for `d` than that.
    ///
    /// So for a settled cluster, load the running deployments with the change applied (a new pending deployment
    /// added, a completed or cancelled one removed), set `position` to the changed deployment, then repeatedly load
    /// the pending deployments ordered after `position` that fit in the headroom, in scheduling order, moving
    /// `position` to the last one loaded, until none is left.
    public static func plan(for snapshot: ClusterSnapshot) -> SchedulingPlan {
        var plan = SchedulingPlan()
        var lastStarted: Int64?
        for (deployment, admitted) in greedyPass(over: snapshot) {
            if admitted && !deployment.isRunning {
                plan.start.append(deployment.id)
                lastStarted = deployment.id
            } else if !admitted && deployment.isRunning {
                plan.preempt.append(deployment.id)
                plan.preemptedBy[deployment.id] = lastStarted
            }
        }
        return plan
    }

    /// The plan after adding a new pending deployment to a settled snapshot, skipping the pass when the outcome is
    /// already known.
    ///
    /// If `new` fits in `settled.available` it simply starts and nothing else changes. Proof: let `R` be the running
    /// set, which the settled pass admitted exactly. Walk the new pass in order, assuming it has admitted exactly
    /// `R ∪ {new}` so far. A deployment of `R` is admitted, since what is ahead of it plus itself is at most
    /// `Σ R + new.request ≤ capacity`; so is `new`, for the same reason. A pending deployment `d` is not: the
    /// settled pass had no room for it after the part of `R` ahead of it, and the new pass has at most as much
    /// (requests are never negative). Adding `new` changes no other deployment's order, so by induction the new
    /// pass admits exactly `R ∪ {new}`.
    ///
    /// Otherwise, if `startsWhenCreated` says it cannot start, it stays pending and, skipped by the pass, changes
    /// nothing. Only when it starts by preempting does this run the full pass over `settled.active + [new]`.
    ///
    /// `settled` must hold every running deployment, give an empty plan, and (for the full pass) follow the subset
    /// rule of `plan(for:)`; `new` must be pending.
    public static func plan(adding new: ActiveDeployment, to settled: ClusterSnapshot) -> SchedulingPlan {
        let decision = decide(creating: new, capacity: settled.capacity, available: settled.available) {
            settled.active.lazy.filter { $0.isRunning && $0.priority >= new.priority }.map(\.request)
                .reduce(Resources(), +)
        }
        switch decision {
        case .start: return SchedulingPlan(start: [new.id])
        case .queue: return SchedulingPlan()
        case .fullPass: return plan(for: ClusterSnapshot(capacity: settled.capacity, active: settled.active + [new]))
        }
    }

    /// What creating a deployment in a settled cluster takes, cheapest first (the proofs are on
    /// `plan(adding:to:)` and `startsWhenCreated`).
    public enum CreateDecision: Sendable, Equatable {
        /// It fits in `available`: it starts and nothing else changes.
        case start
        /// It cannot start even by preempting: it waits and nothing else changes.
        case queue
        /// It starts by preempting: run the pass over the running set and the queue it can affect.
        case fullPass
    }

    /// Decides how much a create must read. `runningAtOrAbovePriority` (the sum of the running requests of priority
    /// at least `new.priority`) is asked for only when `new` does not fit in `available`.
    ///
    /// This is the rule the service's one-statement create computes in SQL (as `available + Σ running below`, the
    /// same amount by the accounting); its general path reaches the same decision by reading the running tail
    /// (`partForPreempting`).
    public static func decide<E: Error>(
        creating new: ActiveDeployment, capacity: Resources, available: Resources,
        runningAtOrAbovePriority: () throws(E) -> Resources
    ) throws(E) -> CreateDecision {
        if new.request.fits(in: available) { return .start }
        let held = try runningAtOrAbovePriority()
        return startsWhenCreated(new.request, capacity: capacity, runningAtOrAbovePriority: held) ? .fullPass : .queue
    }

    /// Whether a deployment created in a settled cluster starts, possibly by preempting strictly lower priorities.
    ///
    /// `runningAtOrAbovePriority` is the sum of the requests of the running deployments whose priority is at least the
    /// new one's. Everything ordered ahead of the new deployment has such a priority, and in a settled cluster the pass
    /// over those admitted exactly the running ones, so this is what the pass leaves free for it: one sum in SQL
    /// instead of reading the queue.
    public static func startsWhenCreated(
        _ request: Resources,
        capacity: Resources,
        runningAtOrAbovePriority: Resources
    ) -> Bool {
        request.fits(in: capacity - runningAtOrAbovePriority)
    }

    /// The most room the pass over the whole cluster can leave for any pending deployment ordered after `position`:
    /// the capacity minus the requests the pass over `snapshot` admits up to and including `position`. It bounds the
    /// whole cluster's pass when `snapshot` holds every deployment that pass admits up to `position`.
    ///
    /// `position` need not be in the snapshot (it may be the deployment just completed), so it works as a cursor for
    /// loading the queue in scheduling order; see `plan(for:)`.
    public static func headroom(for snapshot: ClusterSnapshot, after position: ActiveDeployment) -> Resources {
        greedyPass(over: snapshot)
            .filter { deployment, admitted in admitted && !position.schedulesBefore(deployment) }
            .map(\.deployment.request)
            .reduce(snapshot.capacity, -)
    }

    /// The part of a settled cluster that a change can affect, and the cursor from which `addPending` loads the queue.
    ///
    /// `snapshot.capacity` is the cluster's capacity minus the running deployments left out: the pass admits each of
    /// them and orders them before every deployment in the snapshot, so leaving them out and their requests with them
    /// changes no decision of the pass.
    public struct AffectedPart: Sendable, Equatable {
        public var snapshot: ClusterSnapshot
        public var cursor: ActiveDeployment

        public init(snapshot: ClusterSnapshot, cursor: ActiveDeployment) {
            self.snapshot = snapshot
            self.cursor = cursor
        }
    }

    /// The affected part for a new pending deployment that starts by preempting (`decide` said `.fullPass`) in a
    /// settled cluster with `available` free: `new` and the shortest tail of the running deployments below its
    /// priority that covers what `new` lacks, read from the lowest-ordered end in batches by
    /// `runningBelowFromTail(after)` (in reverse scheduling order, after the given one; empty when none are left).
    ///
    /// Why the rest may be left out: let `T` be that tail and `P` the running deployments below `new.priority` ordered
    /// before it. `Σ P = Σ(running below) − Σ T ≤ Σ(running below) − (new − available)`, which is exactly the room the
    /// pass leaves after `new`, so the pass keeps all of `P`, as it keeps every running deployment ordered before
    /// `new`. A pending deployment ordered before `T` gets less room than in the settled pass, which left it
    /// pending. So the pass over `new`, `T` and the queue after `T`'s first deployment, with the capacity minus
    /// everything else that runs (`available + Σ T`), decides like the full pass.
    ///
    /// It also decides: `new` fits in the part's capacity exactly when `decide` says `.fullPass`. When the whole lower
    /// running set does not cover what it lacks, `new` cannot start even by evicting all of it, and it waits.
    public static func partForPreempting<E: Error>(
        _ new: ActiveDeployment, available: Resources,
        runningBelowFromTail: (_ after: ActiveDeployment?) throws(E) -> [ActiveDeployment]
    ) throws(E) -> AffectedPart {
        let lacking = Resources(
            ram: max(0, new.request.ram - available.ram), cpu: max(0, new.request.cpu - available.cpu),
            gpu: max(0, new.request.gpu - available.gpu))
        var tail: [ActiveDeployment] = []
        var covered = Resources()
        loading: while !lacking.fits(in: covered) {
            let batch = try runningBelowFromTail(tail.last)
            if batch.isEmpty { break }
            for deployment in batch {
                tail.append(deployment)
                covered = covered + deployment.request
                if lacking.fits(in: covered) { break loading }
            }
        }
        return AffectedPart(
            snapshot: ClusterSnapshot(capacity: available + covered, active: [new] + tail), cursor: tail.last ?? new)
    }

    /// The affected part for the completion of the running deployment `completed` in a settled cluster with
    /// `available` free before it, given `head`, the first pending deployment ordered after it (nil: nothing can
    /// change), and `runningBelowHead`, the running deployments of lower priority than `head` (read with it).
    ///
    /// Why the rest may be left out: up to `head` the pass meets only running deployments, each with more room than
    /// before; the running ones of `head`'s priority or above are all ordered before `head`, so only those below it
    /// can lose their place.
    public static func partForCompleting(
        _ completed: ActiveDeployment, available: Resources, head: ActiveDeployment?,
        runningBelowHead: [ActiveDeployment]
    ) -> AffectedPart? {
        guard head != nil else { return nil }
        let capacity = runningBelowHead.map(\.request).reduce(available + completed.request, +)
        return AffectedPart(snapshot: ClusterSnapshot(capacity: capacity, active: runningBelowHead), cursor: completed)
    }

    /// A preempting create decided from two look-ups, as the service's one-statement path decides it in SQL: `lowest`
    /// is the lowest-ordered running deployment below `new`'s priority and `smallestPending` is no more than any
    /// pending request in every dimension (nil: none). When `new` does not fit in `available` but fits once `lowest`
    /// is out, and the smallest pending request does not fit in what that swap leaves, the plan starts `new` and
    /// preempts `lowest`, and nothing else. Nil otherwise: the general path decides.
    ///
    /// This is `partForPreempting` with a tail of one, then `addPending` stopping before it reads the queue: the pass
    /// over `new` and `lowest` with `available + lowest` admits `new` and not `lowest` (`new` did not fit in
    /// `available`), so the headroom after `lowest` is `available + lowest − new`, where no pending request fits.
    public static func planSwapping(
        _ new: ActiveDeployment, available: Resources, lowest: ActiveDeployment, smallestPending: Resources?
    ) -> SchedulingPlan? {
        let room = available + lowest.request
        guard !new.request.fits(in: available), new.request.fits(in: room) else { return nil }
        if let smallestPending, smallestPending.fits(in: room - new.request) { return nil }
        return SchedulingPlan(start: [new.id], preempt: [lowest.id], preemptedBy: [lowest.id: new.id])
    }

    /// A completion decided at the queue head, as the service's one-statement path decides it in SQL: `head` is the
    /// first pending deployment ordered after `completed` (nil: none, and nothing can start), no running deployment
    /// has a lower priority than `head`, and `smallestOtherPending` is no more than any other pending request in every
    /// dimension (nil: none). The pass admits `head` when it fits in what the completion frees; when the smallest
    /// other request does not fit in what is left then, the plan is that and nothing else. Nil otherwise: the general
    /// path decides.
    ///
    /// This is `partForCompleting` with no running deployment below the head, then `addPending`: its room is
    /// `available + completed`, the head comes first, and no other pending deployment fits in what the head leaves.
    public static func planAtQueueHead(
        after completed: ActiveDeployment, available: Resources, head: ActiveDeployment?,
        smallestOtherPending: Resources?
    ) -> SchedulingPlan? {
        guard let head else { return SchedulingPlan() }
        var room = available + completed.request
        let starts = head.request.fits(in: room)
        if starts { room = room - head.request }
        if let smallestOtherPending, smallestOtherPending.fits(in: room) { return nil }
        return SchedulingPlan(start: starts ? [head.id] : [])
    }

    /// Adds to `part` the pending deployments ordered after its cursor that may start, batch by batch in scheduling
    /// order: `load(after, room)` gives the next ones after `after` that fit in `room`, empty when none do.
    /// `smallest` is no more than any pending request in every dimension (nil: the queue is empty).
    ///
    /// The room asked for is `headroom(for:after:)` of what is loaded so far, which holds every deployment the pass
    /// admits up to the cursor (besides those `part` leaves out, ordered before all of them), so a pending
    /// deployment that does not fit in it stays pending and changes nothing.
    public static func addPending<E: Error>(
        to part: inout AffectedPart, smallest: Resources?,
        load: (_ after: ActiveDeployment, _ room: Resources) throws(E) -> [ActiveDeployment]
    ) throws(E) {
        guard let smallest else { return }
        while true {
            let room = headroom(for: part.snapshot, after: part.cursor)
            guard smallest.fits(in: room) else { return }
            let batch = try load(part.cursor, room)
            guard let last = batch.last else { return }
            part.snapshot.active += batch
            part.cursor = last
        }
    }

    /// Refuses a request larger than the cluster's total in any dimension, which could never run.
    ///
    /// Throws `SchedulingError.insufficientCapacity` when `request` does not fit in `capacity`.
    public static func validate(_ request: Resources, capacity: Resources) throws(SchedulingError) {
        guard request.fits(in: capacity) else { throw .insufficientCapacity }
    }

    /// Every deployment in scheduling order, with whether the greedy pass admits it.
    private static func greedyPass(over snapshot: ClusterSnapshot) -> [(deployment: ActiveDeployment, admitted: Bool)] {
        var free = snapshot.capacity
        return snapshot.active.sorted { $0.schedulesBefore($1) }.map { deployment in
            guard deployment.request.fits(in: free) else { return (deployment, false) }
            free = free - deployment.request
            return (deployment, true)
        }
    }
}

/// Why the scheduler refuses a deployment.
public enum SchedulingError: Error, Sendable, Equatable {
    /// The request exceeds the cluster's total capacity in some dimension, so it could never run. The seed API answers
    /// `422 {"detail": "Not Enough Resources on the cluster for this deployment"}`.
    case insufficientCapacity
}
