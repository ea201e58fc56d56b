/// A deployment the scheduler may run: one that is `Pending` or `Running`.
///
/// Completed and cancelled deployments hold no resources and never come back, so the scheduler never sees them.
public struct ActiveDeployment: Sendable, Hashable {
    public var id: Int64
    /// Higher runs first; any number of deployments may share a priority.
    public var priority: Int32
    /// Per-cluster creation order, unique within a cluster and kept across preemptions so a preempted deployment
    /// resumes its place in line.
    public var seq: Int64
    public var request: Resources
    /// `true` while `Running`, `false` while `Pending`.
    public var isRunning: Bool

    public init(id: Int64, priority: Int32, seq: Int64, request: Resources, isRunning: Bool) {
        self.id = id
        self.priority = priority
        self.seq = seq
        self.request = request
        self.isRunning = isRunning
    }

    /// Whether this deployment comes before `other` in the scheduling order, the sort by
    /// `(−priority, 0 if running else 1, seq)`:
    ///
    /// 1. Higher `priority` first.
    /// 2. Within one priority, running before pending, so equal priority never preempts.
    /// 3. Lower `seq` (older) first. `seq` is unique within a cluster, so no two deployments compare equal.
    public func schedulesBefore(_ other: ActiveDeployment) -> Bool {
        if priority != other.priority { return priority > other.priority }
        if isRunning != other.isRunning { return isRunning }
        return seq < other.seq
    }
}
