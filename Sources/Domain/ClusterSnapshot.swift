/// What the scheduler decides from: a cluster's capacity and its active deployments, in any order.
///
/// It may be a subset of the cluster's active deployments; `Scheduler.plan(for:)` says which subsets give the
/// cluster's plan.
public struct ClusterSnapshot: Sendable, Equatable {
    public var capacity: Resources
    public var active: [ActiveDeployment]

    public init(capacity: Resources, active: [ActiveDeployment]) {
        self.capacity = capacity
        self.active = active
    }

    /// Capacity minus the requests of the running deployments in the snapshot: the cluster's `available` resources
    /// when the snapshot holds every running deployment.
    public var available: Resources {
        active.lazy.filter(\.isRunning).map(\.request).reduce(capacity, -)
    }
}
