/// The changes that make a cluster's state equal to its desired running set.
///
/// Deployments in neither list keep their state: running ones keep running, pending ones stay queued. Applying the
/// plan gives a settled cluster, whose plan is empty.
public struct SchedulingPlan: Sendable, Equatable {
    /// Pending deployments to start, in scheduling order.
    public var start: [Int64]
    /// Running deployments to put back in the queue (they keep their `seq`), in scheduling order.
    public var preempt: [Int64]
    /// For each preempted id, the deployment that took its place, named in its `Preempted` event: the last deployment
    /// this plan starts that is ordered before the victim, hence of strictly higher priority (the starter whose
    /// admission came closest to the victim's turn).
    ///
    /// Such a starter exists whenever the running deployments fit the capacity, because a pass that admitted only
    /// running deployments ahead of a running victim would have room for it too. A victim has no entry only when the
    /// running set no longer fits, e.g. after the capacity shrank.
    public var preemptedBy: [Int64: Int64]

    public init(start: [Int64] = [], preempt: [Int64] = [], preemptedBy: [Int64: Int64] = [:]) {
        self.start = start
        self.preempt = preempt
        self.preemptedBy = preemptedBy
    }
}
