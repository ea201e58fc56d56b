import Domain

/// Applies the scheduling policy in PostgreSQL transactions that each first lock the clusters they change.
///
/// Every change runs under `pg_advisory_xact_lock(cluster id)`, so changes to one cluster are serialized across all
/// workers and hosts while clusters proceed in parallel. The changes a worker takes together are made in one
/// transaction and one round trip (`make`), decided inside PostgreSQL; those its statements do not decide are made
/// alone, with `BEGIN`, the lock and the first read pipelined together, and so the writes and `COMMIT`. The WAL
/// flush happens after the locks are released (`SchedulerStatements.durable`), so the next change to a cluster does
/// not wait for this one's fdatasync; the caller is answered only once the change is durable.
/// Only what can change is read: the part of the running set that can lose its place, and pending deployments in
/// scheduling order while the headroom can still admit one (`Scheduler.partForPreempting`, `partForCompleting`).
struct ClusterScheduler {
    let database: Database
    let queue: DeploymentQueue

    /// A deployment request that passed validation.
    struct NewDeployment {
        var name: String
        var imagePath: String
        var request: Resources
        var priority: Int32

        /// How the seed API shows it once created as `id` in `cluster` with `status`.
        func row(id: Int64, in cluster: Int64, status: String) -> DeploymentRow {
            DeploymentRow(
                id: id, name: name, clusterID: cluster, imagePath: imagePath, request: request, status: status,
                priority: priority)
        }
    }

    /// A create (which schedules the new deployment) or a completion of a running deployment (which schedules what its
    /// resources admit), which `make` takes together with others.
    enum Change {
        case create(NewDeployment, in: Int64, by: Caller)
        case complete(Int64, by: Caller)

        var caller: Caller {
            switch self {
            case .create(_, _, let caller), .complete(_, let caller): caller
            }
        }
    }

    /// Makes `changes`, each as if it came alone after the ones before it, and returns each one's row or error:
    /// `HTTPError` 401/404/409/422 for the client, `PostgresError` (a duplicate name, say) otherwise.
    ///
    /// They are first tried together in one round trip (`makeTogether`); each that was not made there is then made
    /// alone on its general path (`createPlanned`, `end`), which also gives the errors their answers.
    /// - Throws: `ServiceUnavailable` when PostgreSQL cannot be reached or the connection drops (whether the changes
    ///   tried together were committed is then unknown, as for a change made alone).
    func make(_ changes: [Change]) throws -> [Result<DeploymentRow, any Error>] {
        try zip(changes, makeTogether(changes)).map { change, row in
            if let row { return .success(row) }
            return Result {
                switch change {
                case .create(let new, let cluster, let caller):
                    let (row, change) = try createPlanned(new, in: cluster, by: caller)
                    queue.publish([change], rebuildFrom: database)
                    return row
                case .complete(let id, let caller):
                    return try end(id, as: .completed, by: caller)
                }
            }
        }
    }

    /// Makes what it can of `changes` in one round trip and one transaction, each decided and written entirely inside
    /// PostgreSQL: the locks of every cluster they change, taken in ascending order (`SchedulerStatements.lockClusters`),
    /// then all the creates in one statement (`createAll`) and all the completions in another (`completeAll`), each
    /// deciding every change on what is committed and what the changes before it wrote, exactly as if it had come
    /// alone after them; then the commit, without waiting for the flush, and one wait for the flush
    /// (`SchedulerStatements.durable`). Returns each change's row, or nil for one it did not make: one whose case
    /// those statements do not decide (it changed nothing), every error case, and all of them when PostgreSQL refused
    /// a statement (a duplicate name), which rolls the transaction back. `docs/decisions.md`, "Changes taken together".
    ///
    /// - Throws: `ServiceUnavailable` when PostgreSQL cannot be reached or the connection drops.
    private func makeTogether(_ changes: [Change]) throws -> [DeploymentRow?] {
        var creates: [(index: Int, parameters: [String?])] = []
        var completions: [(index: Int, parameters: [String?])] = []
        var clusters: [Int64] = []
        var deployments: [Int64] = []
        for (index, change) in changes.enumerated() {
            switch change {
            case .create(let new, let cluster, let caller):
                creates.append((index, ClusterScheduler.parameters(of: new, in: cluster, by: caller)))
                clusters.append(cluster)
            case .complete(let id, let caller):
                completions.append((index, [String(caller.id), String(caller.issuedAt), String(id)]))
                deployments.append(id)
            }
        }
        // Each statement, its parameters as arrays (the changes' parameters, column by column), and its changes.
        let steps: [(statement: Statement, parameters: [String?], changes: [Int])] =
            [(SchedulerStatements.createAll, creates), (SchedulerStatements.completeAll, completions)]
            .filter { !$0.1.isEmpty }
            .map { statement, made in
                let columns = made[0].parameters.indices
                return (
                    statement, columns.map { column in sqlArray(made.map { $0.parameters[column] }) }, made.map(\.index)
                )
            }
        var rows = [DeploymentRow?](repeating: nil, count: changes.count)
        guard !steps.isEmpty else { return rows }
        let lock = (SchedulerStatements.lockClusters, [sqlArray(clusters), sqlArray(deployments)])
        let outcomes = try database.run { connection in
            try connection.pipeline(transactions: [
                [lock] + steps.map { ($0.statement, $0.parameters) }, [(SchedulerStatements.durable, [])],
            ])
        }
        _ = try outcomes[1].get()
        guard case .success(let results) = outcomes[0] else { return rows }
        var published: [DeploymentQueue.Change] = []
        for (step, result) in zip(steps, results.dropFirst()) {
            for row in 0..<result.rowCount {
                // Each result row ends with its change's place among the statement's changes (from 1).
                let place = Int(result.int(row, result.columnCount - 1) ?? 0) - 1
                guard step.changes.indices.contains(place) else { continue }
                let index = step.changes[place]
                let decoded: (DeploymentRow, DeploymentQueue.Change)?
                switch changes[index] {
                case .create(let new, let cluster, _):
                    decoded = ClusterScheduler.decoded(result, row: row, new, in: cluster)
                case .complete(let id, _):
                    decoded = ClusterScheduler.decodedCompletion(result, row: row, id)
                }
                guard let (done, change) = decoded else { continue }
                published.append(change)
                rows[index] = done
            }
        }
        queue.publish(published, rebuildFrom: database)
        return rows
    }

    /// The general path of `create`: reads what the plan needs under the lock, plans in the worker, and writes.
    private func createPlanned(_ new: NewDeployment, in clusterID: Int64, by caller: Caller) throws -> (
        DeploymentRow, DeploymentQueue.Change
    ) {
        try database.run { connection in
            try transaction(connection) { () throws -> (DeploymentRow, DeploymentQueue.Change) in
                // Everything a preempting create reads, in the round trip that takes the lock (this path is taken when
                // `createAll` did not decide it, usually because the create preempts more than one).
                let results = try connection.pipeline([
                    (SchedulerStatements.begin, []),
                    (SchedulerStatements.lock, [String(clusterID)]),
                    (
                        SchedulerStatements.clusterForCreate,
                        [String(caller.id), String(caller.issuedAt), String(clusterID)]
                    ),
                    (
                        SchedulerStatements.runningFromTail,
                        [
                            String(clusterID), String(new.priority), nil, nil,
                            String(SchedulerStatements.readAhead),
                        ]
                    ),
                    (SchedulerStatements.pendingMinimum, [String(clusterID)]),
                ])
                let cluster = results[2]
                guard cluster.rowCount == 1 else { throw HTTPError.unauthorized }
                guard let id = cluster.int(0, 9) else { throw HTTPError(404, "Cluster not found") }
                let capacity = cluster.resources(0)!
                let available = cluster.resources(3)!
                do {
                    try Scheduler.validate(new.request, capacity: capacity)
                } catch {
                    throw HTTPError(422, "Not Enough Resources on the cluster for this deployment")
                }
                let deployment = ActiveDeployment(
                    id: id, priority: new.priority, seq: cluster.int(0, 6)!, request: new.request, isRunning: false)
                let read = Prefetched(
                    running: results[3].deployments(running: true), smallestPending: results[4].resources(0))
                let plan = try plan(
                    adding: deployment, capacity: capacity, available: available, read: read, cluster: clusterID,
                    connection)
                let status = plan.plan.start.contains(id) ? "Running" : "Pending"
                let row: [String?] = [
                    cluster.string(0, 7), String(caller.id), new.name, new.imagePath, String(new.request.ram),
                    String(new.request.cpu), String(new.request.gpu), String(new.priority), status,
                    String(deployment.seq),
                ]
                let change = try apply(
                    plan, available: available, write: .insert(deployment, row: row), cluster: clusterID, connection)
                return (new.row(id: id, in: clusterID, status: status), change)
            }
        }
    }

    /// A create's parameters for `createAll`, in its order, one per array.
    private static func parameters(of new: NewDeployment, in clusterID: Int64, by caller: Caller) -> [String?] {
        [
            String(clusterID), String(caller.id), String(caller.issuedAt), new.name, new.imagePath,
            String(new.request.ram), String(new.request.cpu), String(new.request.gpu), String(new.priority),
        ]
    }

    /// The row and the snapshot change of `createAll`'s result row `row`; nil when it has none.
    private static func decoded(_ created: PostgresResult, row: Int, _ new: NewDeployment, in clusterID: Int64)
        -> (DeploymentRow, DeploymentQueue.Change)?
    {
        guard row < created.rowCount, let id = created.int(row, 0), let seq = created.int(row, 1),
            let status = created.string(row, 6)
        else { return nil }
        let running = status == "Running"
        let deployment = ActiveDeployment(
            id: id, priority: new.priority, seq: seq, request: new.request, isRunning: running)
        var change = DeploymentQueue.Change(
            cluster: clusterID, version: created.int(row, 2) ?? 0,
            available: created.resources(3, row: row) ?? Resources())
        if running { change.addedRunning = [deployment] } else { change.addedPending = [deployment] }
        if created.int(row, 7) != nil {
            let preempted = ActiveDeployment(created, row: row, from: 7, running: true)
            change.removedRunning = [preempted]
            change.addedPending = [preempted.with(running: false)]
        }
        return (new.row(id: id, in: clusterID, status: status), change)
    }

    /// How a deployment ends.
    enum Ending: String {
        /// Only a running deployment completes.
        case completed = "Completed"
        /// A pending or running one may be cancelled.
        case cancelled = "Cancelled"

        /// Whether a deployment in `status` can end this way; the `409` detail when it cannot.
        func conflict(with status: String) -> String? {
            switch self {
            case .completed:
                status == "Running" ? nil : "Deployment is \(status); only a Running deployment can be completed"
            case .cancelled:
                status == "Running" || status == "Pending"
                    ? nil : "Deployment is \(status); only a Pending or Running deployment can be cancelled"
            }
        }
    }

    /// Cancels a pending or running deployment. A running one frees its resources like a completion; a pending one
    /// only leaves the queue, which changes nothing else: the pass never admitted it, so what it leaves for every
    /// deployment after it is the same without it.
    ///
    /// - Throws: `HTTPError` 401/404/409 for the client, `ServiceUnavailable` when PostgreSQL is down.
    func cancel(_ id: Int64, by caller: Caller) throws -> DeploymentRow {
        try end(id, as: .cancelled, by: caller)
    }

    /// Ends the deployment `id` in one transaction under its cluster's lock and schedules what that admits.
    private func end(_ id: Int64, as ending: Ending, by caller: Caller) throws -> DeploymentRow {
        let (row, change) = try database.run { connection in
            try transaction(connection) { () throws -> (DeploymentRow, DeploymentQueue.Change) in
                let parameters = [String(caller.id), String(caller.issuedAt), String(id)]
                let results = try connection.pipeline([
                    (SchedulerStatements.begin, []), (SchedulerStatements.lockDeployment, parameters),
                    (SchedulerStatements.deploymentForComplete, parameters),
                    (SchedulerStatements.queueAfterDeployment, [String(id), String(SchedulerStatements.readAhead)]),
                    (SchedulerStatements.runningBelowQueueHead, [String(id)]),
                    (SchedulerStatements.pendingMinimumForCompletion, [String(id)]),
                ])
                let read = results[2]
                guard read.rowCount == 1 else { throw HTTPError.unauthorized }
                // No lock: the lock's statement could not see the deployment yet (its create committed since).
                guard let found = DeploymentRow(read, row: 0), results[1].rowCount == 1 else {
                    throw HTTPError(404, "Deployment not found")
                }
                if let conflict = ending.conflict(with: found.status) { throw HTTPError(409, conflict) }
                let available = read.resources(10)!
                let ended = ActiveDeployment(
                    id: found.id, priority: found.priority, seq: read.int(0, 9)!, request: found.request,
                    isRunning: found.status == "Running")
                var row = found
                row.status = ending.rawValue
                guard ended.isRunning else {
                    let change = try apply(
                        PlannedChange(
                            plan: SchedulingPlan(), snapshot: ClusterSnapshot(capacity: available, active: [])),
                        available: available, write: .end(ended, ending), cluster: found.clusterID, connection)
                    return (row, change)
                }
                let freed = available + found.request
                let prefetched = Prefetched(
                    running: results[4].deployments(running: true), smallestPending: results[5].resources(0),
                    pending: results[3].deployments(running: false))
                let snapshot = try loadForCompleting(
                    ended, available: available, read: prefetched, cluster: found.clusterID, connection)
                let plan = Scheduler.plan(for: snapshot)
                let change = try apply(
                    PlannedChange(plan: plan, snapshot: snapshot), available: freed, write: .end(ended, ending),
                    cluster: found.clusterID, connection)
                return (row, change)
            }
        }
        queue.publish([change], rebuildFrom: database)
        return row
    }

    /// The row and the snapshot change of `completeAll`'s result row `row`; nil when it has none.
    private static func decodedCompletion(_ done: PostgresResult, row: Int, _ id: Int64)
        -> (DeploymentRow, DeploymentQueue.Change)?
    {
        guard row < done.rowCount, let deployment = DeploymentRow(done, row: row), let seq = done.int(row, 9),
            let available = done.resources(11, row: row)
        else { return nil }
        var change = DeploymentQueue.Change(
            cluster: deployment.clusterID, version: done.int(row, 10) ?? 0, available: available)
        change.removedRunning = [
            ActiveDeployment(
                id: id, priority: deployment.priority, seq: seq, request: deployment.request, isRunning: true)
        ]
        if done.bool(row, 20) {
            let head = ActiveDeployment(done, row: row, from: 14, running: false)
            change.removedPending = [head]
            change.addedRunning = [head.with(running: true)]
        }
        return (deployment, change)
    }

    /// What creating a deployment with `request` and `priority` in `clusterID` would do now, changing nothing.
    struct WhatIf {
        var version: Int64
        var wouldRun: Bool
        /// Running deployments it would preempt, and pending ones that would start beside it.
        var preempts: [Int64] = []
        var alsoStarts: [Int64] = []
        /// Where it would wait, and why; nil when it would run.
        var queuePosition: Int64?
        var pendingReason: String?
    }

    /// Plans the create exactly as `create` would, from one consistent read-only snapshot (no lock: nothing is
    /// written, and a later change may of course decide differently). Waiting, it would be last among its priority.
    ///
    /// - Throws: `HTTPError` 401/404/422 for the client, `ServiceUnavailable` when PostgreSQL is down.
    func whatIf(_ request: Resources, priority: Int32, in clusterID: Int64, by caller: Caller) throws -> WhatIf {
        try database.run { connection in
            let steps: [(Statement, [String?])] = [
                (
                    SchedulerStatements.clusterForWhatIf,
                    [String(caller.id), String(caller.issuedAt), String(clusterID), String(priority)]
                ),
                (
                    SchedulerStatements.runningFromTail,
                    [
                        String(clusterID), String(priority), nil, nil,
                        String(SchedulerStatements.readAhead),
                    ]
                ),
                (SchedulerStatements.pendingMinimum, [String(clusterID)]),
            ]
            return try connection.inSnapshot(steps) { results in
                let cluster = results[0]
                guard cluster.rowCount == 1 else { throw HTTPError.unauthorized }
                guard let capacity = cluster.resources(0) else { throw HTTPError(404, "Cluster not found") }
                do {
                    try Scheduler.validate(request, capacity: capacity)
                } catch {
                    throw HTTPError(422, "Not Enough Resources on the cluster for this deployment")
                }
                // Ids are positive: 0 names the deployment that does not exist.
                let new = ActiveDeployment(
                    id: 0, priority: priority, seq: cluster.int(0, 6)!, request: request, isRunning: false)
                let read = Prefetched(
                    running: results[1].deployments(running: true), smallestPending: results[2].resources(0))
                let plan = try plan(
                    adding: new, capacity: capacity, available: cluster.resources(3)!, read: read, cluster: clusterID,
                    connection
                ).plan
                let version = cluster.int(0, 7) ?? 0
                guard !plan.start.contains(0) else {
                    return WhatIf(
                        version: version, wouldRun: true, preempts: plan.preempt,
                        alsoStarts: plan.start.filter { $0 != 0 })
                }
                // Waiting, it would be last among its priority: it would get the next `seq`.
                let ahead = try pendingAhead(
                    of: (priority, cluster.int(0, 6)!), in: clusterID, atVersion: version, connection)
                return WhatIf(
                    version: version, wouldRun: false, queuePosition: ahead + 1,
                    pendingReason: Scheduler.pendingReason(request: request, free: cluster.resources(8)!))
            }
        }
    }

    /// How many pending deployments of `cluster` come before the place (`priority`, `seq`) in scheduling order: from
    /// the snapshot when it shows `version` (O(log n)), else counted on `connection`, in the snapshot `version` was
    /// read in (as long as the queue ahead).
    ///
    /// - Throws: `PostgresError`.
    func pendingAhead(
        of place: (priority: Int32, seq: Int64), in cluster: Int64, atVersion version: Int64,
        _ connection: PostgresConnection
    ) throws -> Int64 {
        if let counts = queue.counts(of: cluster, atVersion: version, ahead: place) { return counts.pendingAhead }
        return try connection.execute(
            SchedulerStatements.pendingAhead, [String(cluster), String(place.priority), String(place.seq)]
        ).int(0, 0) ?? 0
    }

    /// How many deployments of `cluster` run and wait: the snapshot's set sizes when it shows `version` (O(1)), else
    /// counted on `connection`, in the snapshot `version` was read in (index-only counts, as long as the sets).
    ///
    /// - Throws: `PostgresError`.
    func sizes(of cluster: Int64, atVersion version: Int64, _ connection: PostgresConnection) throws
        -> (running: Int64, pending: Int64)
    {
        if let counts = queue.counts(of: cluster, atVersion: version) { return (counts.running, counts.pending) }
        let counted = try connection.execute(SchedulerStatements.sizes, [String(cluster)])
        return (counted.int(0, 0) ?? 0, counted.int(0, 1) ?? 0)
    }

    /// Deletes the cluster `id` when nothing in it is pending or running, with its finished deployments and their
    /// events, under its lock (a create waiting for the lock then finds no cluster), and then its queue snapshot.
    ///
    /// - Throws: `HTTPError` 401/404/409 for the client, `ServiceUnavailable` when PostgreSQL is down.
    func delete(_ id: Int64, by caller: Caller) throws {
        try database.run { connection in
            try transaction(connection) {
                let found = try connection.pipeline([
                    (SchedulerStatements.begin, []), (SchedulerStatements.lock, [String(id)]),
                    (SchedulerStatements.clusterForDelete, [String(caller.id), String(caller.issuedAt), String(id)]),
                ])[2]
                guard found.rowCount == 1 else { throw HTTPError.unauthorized }
                guard found.int(0, 0) != nil else { throw HTTPError(404, "Cluster not found") }
                let active = found.int(0, 1) ?? 0
                guard active == 0 else {
                    throw HTTPError(
                        409, "Cluster has \(active) pending or running deployments; complete or cancel them first")
                }
                _ = try connection.pipeline(
                    SchedulerStatements.deleteCluster.map { ($0, [String(id)]) } + [
                        (SchedulerStatements.commit, []), (SchedulerStatements.durable, []),
                    ])
            }
        }
        queue.forget(id)
    }

    /// Brings a cluster that is not in the policy's state into it, reading the whole cluster under its lock, and
    /// returns what that started and preempted (nothing when it already was). The API's changes never leave a cluster
    /// unsettled; this is for `hvctl fsck --repair`, after someone changed the database by hand.
    ///
    /// - Throws: `ServiceUnavailable` when PostgreSQL is down, `PostgresError` otherwise.
    func settle(_ cluster: Int64) throws -> SchedulingPlan {
        let (plan, change) = try database.run { connection in
            try transaction(connection) { () throws -> (SchedulingPlan, DeploymentQueue.Change?) in
                let read = try connection.pipeline([
                    (SchedulerStatements.begin, []), (SchedulerStatements.lock, [String(cluster)]),
                    (ClusterRecord.statement, [String(cluster)]),
                ])[2]
                guard let record = ClusterRecord(read) else { throw HTTPError(404, "Cluster not found") }
                let snapshot = record.snapshot
                let plan = Scheduler.plan(for: snapshot)
                guard !plan.start.isEmpty || !plan.preempt.isEmpty else {
                    try connection.execute(SchedulerStatements.commit)
                    return (plan, nil)
                }
                let change = try apply(
                    PlannedChange(plan: plan, snapshot: snapshot), available: record.available, write: .none,
                    cluster: cluster, connection)
                return (plan, change)
            }
        }
        if let change { queue.publish([change], rebuildFrom: database) }
        return plan
    }

    /// A plan and the snapshot it was computed from (which holds every deployment the plan names).
    struct PlannedChange {
        var plan: SchedulingPlan
        var snapshot: ClusterSnapshot
    }

    /// The plan for a new pending deployment, reading no more than the decision needs: nothing when it fits in
    /// `available`; otherwise the lower-priority running set from its tail until it covers what the deployment lacks
    /// (all of it when it cannot, and the deployment waits), then the part of the queue it can affect.
    private func plan(
        adding new: ActiveDeployment, capacity: Resources, available: Resources, read: Prefetched, cluster: Int64,
        _ connection: PostgresConnection
    ) throws -> PlannedChange {
        let alone = ClusterSnapshot(capacity: capacity, active: [new])
        if new.request.fits(in: available) {
            return PlannedChange(plan: SchedulingPlan(start: [new.id]), snapshot: alone)
        }
        // Reading the lower-priority running set from its tail decides as well: `new` waits exactly when all of it
        // does not cover what it lacks (`Scheduler.partForPreempting`).
        var part = try Scheduler.partForPreempting(new, available: available) { after in
            guard let after else { return read.running }
            return try connection.execute(
                SchedulerStatements.runningFromTail,
                [
                    String(cluster), String(new.priority), String(after.priority), String(after.seq),
                    String(SchedulerStatements.batchSize),
                ]
            ).deployments(running: true)
        }
        guard new.request.fits(in: part.snapshot.capacity) else {
            return PlannedChange(plan: SchedulingPlan(), snapshot: alone)
        }
        try addPending(to: &part, smallest: read.smallestPending, first: [], cluster: cluster, connection)
        return PlannedChange(plan: Scheduler.plan(for: part.snapshot), snapshot: part.snapshot)
    }

    /// The running deployments below the queue head, then the queue after `completed`: the part of the cluster a
    /// completion affects (`Scheduler.partForCompleting`); an empty snapshot when nothing waits behind it.
    private func loadForCompleting(
        _ completed: ActiveDeployment, available: Resources, read: Prefetched, cluster: Int64,
        _ connection: PostgresConnection
    ) throws -> ClusterSnapshot {
        let part = Scheduler.partForCompleting(
            completed, available: available, head: read.pending.first, runningBelowHead: read.running)
        guard var part else { return ClusterSnapshot(capacity: available + completed.request, active: []) }
        try addPending(to: &part, smallest: read.smallestPending, first: read.pending, cluster: cluster, connection)
        return part.snapshot
    }

    /// What the slow paths read in the round trip that takes the lock, so that a preempting create or a completion
    /// holds the lock for two round trips in the common case (this one and the write) plus one per further batch.
    private struct Prefetched {
        /// The first `SchedulerStatements.readAhead` of the running set below the new priority from its tail
        /// (creates), or the running set below the queue head (completions).
        var running: [ActiveDeployment]
        /// No more than any pending request in every dimension; nil when nothing is pending.
        var smallestPending: Resources?
        /// The queue after the completed deployment, up to `SchedulerStatements.readAhead` (completions only).
        var pending: [ActiveDeployment] = []
    }

    /// `Scheduler.addPending` from PostgreSQL: pending deployments after the cursor, batch by batch. `first` is the
    /// queue right after the part's cursor in scheduling order (up to `SchedulerStatements.readAhead`, whatever they
    /// fit), read ahead; the first batch is taken from it when it decides that batch.
    private func addPending(
        to part: inout Scheduler.AffectedPart, smallest: Resources?, first: [ActiveDeployment], cluster: Int64,
        _ connection: PostgresConnection
    ) throws {
        var readAhead: [ActiveDeployment]? = first.isEmpty ? nil : first
        try Scheduler.addPending(to: &part, smallest: smallest) { cursor, room in
            if let ahead = readAhead {
                readAhead = nil
                // Every deployment up to the last one read ahead was examined, so those that fit are the next ones
                // that fit; with none of them fitting, a short read-ahead means none are left.
                let fitting = ahead.filter { $0.request.fits(in: room) }
                if !fitting.isEmpty || ahead.count < SchedulerStatements.readAhead { return fitting }
            }
            return try connection.execute(
                SchedulerStatements.pendingAfter,
                [
                    String(cluster), String(cursor.priority), String(cursor.isRunning ? 0 : cursor.seq),
                    String(room.ram), String(room.cpu), String(room.gpu), String(SchedulerStatements.batchSize),
                ]
            ).deployments(running: false).sorted { $0.schedulesBefore($1) }
        }
    }

    /// What a change writes besides its plan.
    private enum Write {
        /// A create: the new deployment, inserted with its final status. `row` holds the `apply` statement's
        /// parameters $13…$22.
        case insert(ActiveDeployment, row: [String?])
        /// Nothing but the plan (`settle`).
        case none
        /// A deployment that completes or is cancelled (running, or for a cancel also pending).
        case end(ActiveDeployment, Ending)
    }

    /// Writes the change and its plan (statuses, events, the cluster's accounting and version) as one statement and
    /// commits, in one round trip, and returns the change to publish.
    ///
    /// - Throws: `PostgresError`; or when the rows the statement changed are not exactly the plan's (they cannot be,
    ///   under the lock; checking costs nothing and keeps a bug from ever corrupting the accounting).
    private func apply(
        _ planned: PlannedChange, available: Resources, write: Write, cluster: Int64, _ connection: PostgresConnection
    ) throws -> DeploymentQueue.Change {
        let plan = planned.plan
        var byID: [Int64: ActiveDeployment] = [:]
        for deployment in planned.snapshot.active { byID[deployment.id] = deployment }
        var change = DeploymentQueue.Change(cluster: cluster, version: 0, available: available)
        var events = Events()
        var inserted: ActiveDeployment?
        var ended: (deployment: ActiveDeployment, ending: Ending)?
        switch write {
        case .insert(let deployment, _):
            inserted = deployment
            events.add(deployment.id, "Queued")
        case .end(let deployment, let ending):
            ended = (deployment, ending)
            events.add(deployment.id, ending.rawValue)
            if deployment.isRunning {
                change.removedRunning.append(deployment)
            } else {
                change.removedPending.append(deployment)
            }
        case .none:
            break
        }
        var toStart: [Int64] = []
        for id in plan.start {
            guard let deployment = byID[id] else { continue }
            events.add(id, "Started")
            change.available = change.available - deployment.request
            if id != inserted?.id {
                toStart.append(id)
                change.removedPending.append(deployment)
            }
            change.addedRunning.append(deployment.with(running: true))
        }
        for id in plan.preempt {
            guard let deployment = byID[id] else { continue }
            events.add(id, "Preempted", causedBy: plan.preemptedBy[id])
            change.available = change.available + deployment.request
            change.removedRunning.append(deployment)
            change.addedPending.append(deployment.with(running: false))
        }
        if let inserted, !plan.start.contains(inserted.id) { change.addedPending.append(inserted) }

        var parameters: [String?] = [
            String(cluster), String(change.available.ram), String(change.available.cpu), String(change.available.gpu),
            inserted.map { String($0.seq + 1) }, sqlArray(toStart), sqlArray(plan.preempt),
            ended.map { String($0.deployment.id) },
        ]
        parameters += events.parameters
        if case .insert(let deployment, let row) = write {
            parameters += [String(deployment.id)] + row
        } else {
            parameters += [String?](repeating: nil, count: 11)
        }
        parameters.append(ended?.ending.rawValue)
        let results = try connection.pipeline([
            (SchedulerStatements.apply, parameters), (SchedulerStatements.commit, []),
            (SchedulerStatements.durable, []),
        ])
        let expected = toStart.count + plan.preempt.count + (inserted == nil && ended == nil ? 0 : 1)
        guard results[0].rowCount == 1, results[0].int(0, 1) == Int64(expected) else {
            throw PostgresError(
                sqlState: nil, message: "cluster \(cluster): the write did not match the plan", connectionLost: false)
        }
        change.version = results[0].int(0, 0) ?? 0
        return change
    }

    /// Runs `body` inside the transaction it opens; rolls back when it throws.
    private func transaction<T>(_ connection: PostgresConnection, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            if connection.inTransaction { _ = try? connection.execute(SchedulerStatements.rollback) }
            throw error
        }
    }
}

/// Events to insert in one statement, as parallel arrays.
private struct Events {
    var ids: [Int64] = []
    var kinds: [String] = []
    var causes: [Int64?] = []

    mutating func add(_ id: Int64, _ kind: String, causedBy cause: Int64? = nil) {
        ids.append(id)
        kinds.append(kind)
        causes.append(cause)
    }

    var parameters: [String?] {
        [sqlArray(ids), sqlArray(kinds), sqlArray(causes.map { $0.map(String.init) })]
    }
}

/// A PostgreSQL array literal of `values`, each quoted (nil is NULL). Escaped byte by byte: Foundation's
/// `replacingOccurrences` cost the worker a sixth of its CPU in a batch of preempting creates.
private func sqlArray(_ values: [String?]) -> String {
    var bytes: [UInt8] = [UInt8(ascii: "{")]
    for (index, value) in values.enumerated() {
        if index > 0 { bytes.append(UInt8(ascii: ",")) }
        guard let value else {
            bytes += "NULL".utf8
            continue
        }
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { bytes.append(UInt8(ascii: "\\")) }
            bytes.append(byte)
        }
        bytes.append(UInt8(ascii: "\""))
    }
    bytes.append(UInt8(ascii: "}"))
    return String(decoding: bytes, as: UTF8.self)
}

private func sqlArray(_ values: [Int64]) -> String { sqlArray(values.map { String($0) }) }

extension PostgresResult {
    /// Every row as `id, priority, seq, ram_required, cpu_required, gpu_required`.
    fileprivate func deployments(running: Bool) -> [ActiveDeployment] {
        (0..<rowCount).map { ActiveDeployment(self, row: $0, running: running) }
    }

    /// Columns `first`…`first + 2` of `row` as RAM, CPU and GPU; nil when they are NULL (an aggregate over no rows).
    func resources(_ first: Int, row: Int = 0) -> Resources? {
        guard let ram = int(row, first) else { return nil }
        return Resources(ram: ram, cpu: int(row, first + 1) ?? 0, gpu: int(row, first + 2) ?? 0)
    }
}

extension ActiveDeployment {
    fileprivate func with(running: Bool) -> ActiveDeployment {
        ActiveDeployment(id: id, priority: priority, seq: seq, request: request, isRunning: running)
    }

    /// Reads `id, priority, seq, ram_required, cpu_required, gpu_required` from column `first` on.
    init(_ result: PostgresResult, row: Int, from first: Int = 0, running: Bool) {
        self.init(
            id: result.int(row, first) ?? 0, priority: Int32(result.int(row, first + 1) ?? 0),
            seq: result.int(row, first + 2) ?? 0,
            request: Resources(
                ram: result.int(row, first + 3) ?? 0, cpu: result.int(row, first + 4) ?? 0,
                gpu: result.int(row, first + 5) ?? 0),
            isRunning: running)
    }
}

/// The SQL of `ClusterScheduler`, prepared once per connection and run from generic plans made at its first run,
/// from whatever statistics PostgreSQL has then: none on a fresh install. So each statement leaves the planner one
/// sensible index whatever they say (`GenericPlanTests`): a row found by id tests its status with `sqlStatus`, and the
/// smallest pending request is `ORDER BY … LIMIT 1` along its own index, whose predicate no other statement states
/// (a `min()` was read from another, and walks of the queue took these indexes and sorted).
enum SchedulerStatements {
    static let batchSize = 64
    /// The status of `row`, a deployment found by id, is one of `statuses`: tested as text, which no partial index on
    /// `status` matches, so the primary key is the only index to take (planned on empty tables, a completion's update
    /// read the whole running index for its row).
    private static func sqlStatus(of row: String, is statuses: String...) -> String {
        "\(row).status || '' IN (" + statuses.map { "'\($0)'" }.joined(separator: ", ") + ")"
    }
    /// Rows read ahead with the lock, before it is known how many are needed: usually one is.
    static let readAhead = 8
    static let begin = Statement(name: "sched_begin", sql: "BEGIN")
    static let commit = Statement(name: "sched_commit", sql: "COMMIT")
    static let rollback = Statement(name: "sched_rollback", sql: "ROLLBACK")
    /// Takes the cluster's lock, and has the transaction commit without waiting for the WAL flush, so that the lock
    /// is released before the flush; `durable` then waits for it. A later change that read this one commits after it
    /// in the WAL, so a crash can never keep the later change and lose this one.
    static let lock = Statement(
        name: "sched_lock", sql: "SELECT pg_advisory_xact_lock($1), set_config('synchronous_commit', 'off', true)")
    /// Run right after a `COMMIT` made under `lock`, outside the lock: returns once that commit is on disk. Unless
    /// the WAL is already flushed as far as it was written (another commit's flush covered ours), it commits a
    /// transaction of its own with `synchronous_commit` on, whose flush covers every earlier commit record. That
    /// transaction must write WAL: PostgreSQL flushes at commit only when the transaction wrote a record of its own,
    /// so one that merely takes a transaction id commits without waiting. A transactional logical message (empty,
    /// ignored by anything that is not decoding) is the smallest such record any role may write.
    static let durable = Statement(
        name: "sched_durable",
        sql: """
            SELECT CASE WHEN pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()
                THEN pg_logical_emit_message(true, 'hypervisor', '') END
            """)

    /// Creates (into the clusters `$1`, by the callers `$2` with their tokens' issue times `$3`, names `$4`, images
    /// `$5`, requests `$6`–`$8` and priorities `$9`, as arrays in the order given) in one statement read after the
    /// locks, each decided exactly as if it came alone after the ones before it in its cluster. A recursive walk over
    /// each cluster's creates in order carries what the ones before left: `available_*`, the running deployments
    /// they preempted, the lowest priority they started, and the smallest request they put in the queue. Each create
    /// of a caller who may create there and no larger than the cluster's total is decided by the cheap cases of
    /// `Scheduler.decide`, then `Scheduler.planSwapping`:
    /// - `start`: it fits in `available`, so it starts and nothing else changes (proof on `plan(adding:to:)`);
    /// - `swap`: the lowest-ordered running deployment below its priority (one step along `deployments_running`
    ///   past the ones already preempted, which must be ordered before every create started in the walk) makes room
    ///   for it, and the smallest pending request (`smallestFitsSQL` with what the walk queued) does not fit in what
    ///   is left: it starts and that one goes back to the queue;
    /// - `wait`: it does not fit in `available` plus every running request below its priority (`startsWhenCreated`
    ///   by the accounting). The sum is taken only when it does not fit once the deployment `swap` looked at is out
    ///   (else it fits in the sum). It counts every deployment preempted before it, and every create started before
    ///   it once one of them is below its priority, which can only make it larger, so a create found waiting waits;
    /// - anything else changes nothing, and the create is made alone on the general path afterwards.
    ///
    /// Starting and finishing a statement's executor costs as much as running a create's plan, so a batch's creates
    /// share one. Returns, per create made, the new id, `seq`, the cluster's version and `available_*` as after it,
    /// its status, the deployment it preempted (`id, priority, seq, ram/cpu/gpu_required`; NULLs: none), then its
    /// place in the arrays (1-based). (The walk's `made_here` is `kind IS NOT NULL` as a column of its own: filtered
    /// on it, `decided` is estimated small enough that the cluster's update keeps its primary key, `GenericPlanTests`.)
    static let createAll = createAllStatement()
    private static func createAllStatement() -> Statement {
        let running = ("w.running_from_priority", "w.running_from_seq")
        let pending = ("w.pending_from_priority", "w.pending_from_seq")
        let new = ("i.priority", "c.next_seq + w.made")
        let startedTail = sqlFirstInTail(running, new)
        let queuedHead = sqlFirstInQueue(pending, new)
        let preemptedHead = sqlFirstInQueue(pending, ("v.priority", "v.seq"))
        // The next running deployment a swap would evict, looked up only when the create does not fit.
        let victim = lookUpSQL(
            .runningTail, cluster: "w.cluster", from: running,
            condition: "NOT (i.ram <= w.ram AND i.cpu <= w.cpu AND i.gpu <= w.gpu) AND d.priority < i.priority",
            limit: "1")
        return Statement(
            name: "sched_create_all",
            sql: """
                WITH RECURSIVE input AS (
                    SELECT t.*, row_number() OVER (PARTITION BY t.cluster ORDER BY t.n) AS k
                    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
                                $7::bigint[], $8::bigint[], $9::integer[])
                        WITH ORDINALITY AS t(cluster, caller, issued, name, image, ram, cpu, gpu, priority, n)
                ), cluster AS (
                    \(inputClustersSQL("c.organization_id, c.owner_id, c.next_seq, c.total_ram, c.total_cpu, c.total_gpu"))
                ), walk AS (
                    SELECT c.id AS cluster, 0::bigint AS k, 0::bigint AS n, NULL::text AS kind, false AS made_here,
                           0::bigint AS made,
                           c.available_ram AS ram, c.available_cpu AS cpu, c.available_gpu AS gpu,
                           NULL::bigint AS victim, NULL::integer AS victim_priority, NULL::bigint AS victim_seq,
                           NULL::bigint AS victim_ram, NULL::bigint AS victim_cpu, NULL::bigint AS victim_gpu,
                           c.running_from_priority, c.running_from_seq, c.pending_from_priority, c.pending_from_seq,
                           2147483648::bigint AS lowest_started, 0::bigint AS started_ram, 0::bigint AS started_cpu,
                           0::bigint AS started_gpu, NULL::bigint AS queued_ram, NULL::bigint AS queued_cpu,
                           NULL::bigint AS queued_gpu
                    FROM cluster c
                    UNION ALL
                    SELECT w.cluster, i.k, i.n, s.kind, s.kind IS NOT NULL, w.made + (s.kind IS NOT NULL)::integer,
                           w.ram - CASE s.kind WHEN 'start' THEN i.ram WHEN 'swap' THEN i.ram - v.ram_required ELSE 0 END,
                           w.cpu - CASE s.kind WHEN 'start' THEN i.cpu WHEN 'swap' THEN i.cpu - v.cpu_required ELSE 0 END,
                           w.gpu - CASE s.kind WHEN 'start' THEN i.gpu WHEN 'swap' THEN i.gpu - v.gpu_required ELSE 0 END,
                           swapped.id, swapped.priority, swapped.seq, swapped.ram_required, swapped.cpu_required,
                           swapped.gpu_required, m.running_from_priority, m.running_from_seq, m.pending_from_priority,
                           m.pending_from_seq,
                           CASE WHEN s.kind IN ('start', 'swap') THEN least(w.lowest_started, i.priority)
                                ELSE w.lowest_started END,
                           w.started_ram + CASE WHEN s.kind IN ('start', 'swap') THEN i.ram ELSE 0 END,
                           w.started_cpu + CASE WHEN s.kind IN ('start', 'swap') THEN i.cpu ELSE 0 END,
                           w.started_gpu + CASE WHEN s.kind IN ('start', 'swap') THEN i.gpu ELSE 0 END,
                           CASE s.kind WHEN 'wait' THEN least(w.queued_ram, i.ram)
                                       WHEN 'swap' THEN least(w.queued_ram, v.ram_required) ELSE w.queued_ram END,
                           CASE s.kind WHEN 'wait' THEN least(w.queued_cpu, i.cpu)
                                       WHEN 'swap' THEN least(w.queued_cpu, v.cpu_required) ELSE w.queued_cpu END,
                           CASE s.kind WHEN 'wait' THEN least(w.queued_gpu, i.gpu)
                                       WHEN 'swap' THEN least(w.queued_gpu, v.gpu_required) ELSE w.queued_gpu END
                    FROM walk w
                    JOIN input i ON i.cluster = w.cluster AND i.k = w.k + 1
                    JOIN cluster c ON c.id = w.cluster
                    LEFT JOIN LATERAL (
                        \(victim)
                    ) v ON true
                    CROSS JOIN LATERAL (
                        SELECT CASE WHEN w.lowest_started < i.priority THEN w.started_ram ELSE 0 END AS ram,
                               CASE WHEN w.lowest_started < i.priority THEN w.started_cpu ELSE 0 END AS cpu,
                               CASE WHEN w.lowest_started < i.priority THEN w.started_gpu ELSE 0 END AS gpu
                    ) b
                    CROSS JOIN LATERAL (
                        SELECT CASE
                            WHEN NOT (i.ram <= c.total_ram AND i.cpu <= c.total_cpu AND i.gpu <= c.total_gpu)
                                 OR NOT EXISTS (SELECT FROM users u WHERE u.id = i.caller AND u.tokens_valid_after <= i.issued
                                                                      AND \(sqlInScope("c")))
                            THEN NULL
                            WHEN i.ram <= w.ram AND i.cpu <= w.cpu AND i.gpu <= w.gpu THEN 'start'
                            WHEN v.priority < w.lowest_started
                                 AND i.ram <= w.ram + v.ram_required AND i.cpu <= w.cpu + v.cpu_required
                                 AND i.gpu <= w.gpu + v.gpu_required
                                 AND NOT coalesce(\(smallestFitsSQL(cluster: "w.cluster", queued: "w.queued") { "w.\($0) + v.\($0)_required - i.\($0)" }),
                                                  false)
                            THEN 'swap'
                            WHEN NOT coalesce(i.ram <= w.ram + v.ram_required AND i.cpu <= w.cpu + v.cpu_required
                                              AND i.gpu <= w.gpu + v.gpu_required, false)
                                 AND (SELECT NOT (i.ram <= w.ram + b.ram + coalesce(sum(r.ram_required), 0)
                                              AND i.cpu <= w.cpu + b.cpu + coalesce(sum(r.cpu_required), 0)
                                              AND i.gpu <= w.gpu + b.gpu + coalesce(sum(r.gpu_required), 0))
                                  FROM deployments r
                                  WHERE \(sqlRunningBelow("r", cluster: "w.cluster", priority: "i.priority", from: "w.running_from_priority")))
                            THEN 'wait'
                        END AS kind
                        OFFSET 0
                    ) s
                    LEFT JOIN LATERAL (SELECT v.* WHERE s.kind = 'swap') swapped ON true
                    CROSS JOIN LATERAL (
                        SELECT CASE s.kind WHEN 'start' THEN \(startedTail[0]) WHEN 'swap' THEN v.priority
                                           ELSE w.running_from_priority END AS running_from_priority,
                               CASE s.kind WHEN 'start' THEN \(startedTail[1]) WHEN 'swap' THEN v.seq - 1
                                           ELSE w.running_from_seq END AS running_from_seq,
                               CASE s.kind WHEN 'wait' THEN \(queuedHead[0]) WHEN 'swap' THEN \(preemptedHead[0])
                                           ELSE w.pending_from_priority END AS pending_from_priority,
                               CASE s.kind WHEN 'wait' THEN \(queuedHead[1]) WHEN 'swap' THEN \(preemptedHead[1])
                                           ELSE w.pending_from_seq END AS pending_from_seq
                    ) m
                ), decided AS (
                    SELECT w.*, i.caller, i.name, i.image, i.ram AS ram_required, i.cpu AS cpu_required,
                           i.gpu AS gpu_required, i.priority, c.organization_id, c.next_seq + w.made - 1 AS seq,
                           c.version + w.made AS version
                    FROM walk w JOIN input i ON i.n = w.n JOIN cluster c ON c.id = w.cluster
                    WHERE w.made_here
                ), inserted AS (
                    INSERT INTO deployments (id, cluster_id, organization_id, owner_id, name, image_path, ram_required,
                                             cpu_required, gpu_required, priority, status, seq, started_at)
                    SELECT nextval('deployments_id_seq'), d.cluster, d.organization_id, d.caller, d.name, d.image,
                           d.ram_required, d.cpu_required, d.gpu_required, d.priority,
                           CASE WHEN d.kind = 'wait' THEN 'Pending' ELSE 'Running' END::deployment_status, d.seq,
                           CASE WHEN d.kind <> 'wait' THEN now() END
                    FROM decided d
                    ORDER BY d.n
                    RETURNING id, cluster_id, seq, status
                ), preempted AS (
                    UPDATE deployments r SET status = 'Pending', preemptions = r.preemptions + 1
                    FROM decided d WHERE r.id = d.victim AND \(sqlStatus(of: "r", is: "Running"))
                ), events AS (
                    INSERT INTO deployment_events (deployment_id, cluster_id, kind, caused_by)
                    SELECT CASE WHEN k.kind = 'Preempted' THEN d.victim ELSE i.id END, d.cluster, k.kind,
                           CASE WHEN k.kind = 'Preempted' THEN i.id END
                    FROM decided d JOIN inserted i ON i.cluster_id = d.cluster AND i.seq = d.seq
                    CROSS JOIN LATERAL unnest(CASE d.kind WHEN 'wait' THEN '{Queued}' WHEN 'start' THEN '{Queued,Started}'
                                              ELSE '{Queued,Started,Preempted}' END::deployment_event_kind[])
                        WITH ORDINALITY AS k(kind, o)
                    ORDER BY d.n, k.o
                ), updated AS (
                    UPDATE clusters c
                    SET available_ram = l.ram, available_cpu = l.cpu, available_gpu = l.gpu,
                        next_seq = c.next_seq + l.made, version = c.version + l.made,
                        running_from_priority = l.running_from_priority, running_from_seq = l.running_from_seq,
                        pending_from_priority = l.pending_from_priority, pending_from_seq = l.pending_from_seq
                    FROM (SELECT DISTINCT ON (d.cluster) * FROM decided d ORDER BY d.cluster, d.k DESC) l
                    WHERE c.id = l.cluster
                )
                SELECT i.id, i.seq, d.version, d.ram, d.cpu, d.gpu, i.status, d.victim, d.victim_priority, d.victim_seq,
                       d.victim_ram, d.victim_cpu, d.victim_gpu, d.n
                FROM decided d JOIN inserted i ON i.cluster_id = d.cluster AND i.seq = d.seq
                ORDER BY d.n
                """)
    }

    /// Completions of the running deployments `$3` (by the callers `$1` with their tokens' issue times `$2`, as
    /// arrays in the order given) in one statement read after the locks, each decided exactly as if it came alone
    /// after the ones before it in its cluster, by `Scheduler.planAtQueueHead`: a recursive walk over each cluster's
    /// completions in order carries `available_*`, the deployments completed and the queue heads started. Its head is
    /// the first pending deployment past the heads the walk started (one step along `deployments_pending_order`),
    /// which must be ordered after the completed one (no head: nothing is pending there). A completion applies when
    /// no running deployment the walk did not complete is below the head's priority and the smallest other pending
    /// request (`smallestFitsSQL`, past the started heads) does not fit in what is left once the head, if it fits in
    /// what the completion frees, has started. Any other completion (not running, not the caller's, its cluster not
    /// locked by `lockClusters`, or another case) changes nothing and is made alone on the general path afterwards.
    ///
    /// Returns, per completion made, the row, its `seq`, the cluster's new version and `available_*`, then the queue
    /// head (`id, priority, seq, ram/cpu/gpu_required`; NULLs: none), whether it started, and the completion's place
    /// in the arrays (1-based).
    static let completeAll = completeAllStatement()
    private static func completeAllStatement() -> Statement {
        let startedTail = sqlFirstInTail(("w.running_from_priority", "w.running_from_seq"), ("h.priority", "h.seq"))
        return Statement(
            name: "sched_complete_all",
            sql: """
                WITH RECURSIVE input AS (
                    SELECT t.n, d.id, d.name, d.cluster_id AS cluster, d.image_path, d.ram_required AS ram,
                           d.cpu_required AS cpu, d.gpu_required AS gpu, d.priority, d.seq,
                           EXISTS (SELECT FROM users u WHERE u.id = t.caller AND u.tokens_valid_after <= t.issued
                                                        AND \(sqlInScope("d")))
                               AND \(sqlStatus(of: "d", is: "Running")) AND \(sqlLocked("d.cluster_id")) AS allowed,
                           row_number() OVER (PARTITION BY d.cluster_id ORDER BY t.n) AS k
                    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS t(caller, issued, id, n)
                    JOIN deployments d ON d.id = t.id
                ), cluster AS (
                    \(inputClustersSQL(nil))
                ), walk AS (
                    SELECT c.id AS cluster, 0::bigint AS k, 0::bigint AS n, false AS applies, 0::bigint AS made,
                           c.available_ram AS ram, c.available_cpu AS cpu, c.available_gpu AS gpu,
                           '{}'::bigint[] AS done, '{}'::bigint[] AS heads, c.running_from_priority, c.running_from_seq,
                           c.pending_from_priority, c.pending_from_seq, NULL::bigint AS head, NULL::integer AS head_priority,
                           NULL::bigint AS head_seq, NULL::bigint AS head_ram, NULL::bigint AS head_cpu,
                           NULL::bigint AS head_gpu, false AS starts
                    FROM cluster c
                    UNION ALL
                    SELECT w.cluster, i.k, i.n, s.applies, w.made + s.applies::integer,
                           CASE WHEN s.applies THEN x.left_ram ELSE w.ram END,
                           CASE WHEN s.applies THEN x.left_cpu ELSE w.cpu END,
                           CASE WHEN s.applies THEN x.left_gpu ELSE w.gpu END,
                           CASE WHEN s.applies THEN w.done || i.id ELSE w.done END,
                           CASE WHEN s.applies AND x.starts THEN w.heads || h.id ELSE w.heads END,
                           CASE WHEN s.applies AND x.starts THEN \(startedTail[0]) ELSE w.running_from_priority END,
                           CASE WHEN s.applies AND x.starts THEN \(startedTail[1]) ELSE w.running_from_seq END,
                           coalesce(h.priority, w.pending_from_priority),
                           CASE WHEN h.id IS NULL THEN w.pending_from_seq WHEN s.applies AND x.starts THEN h.seq + 1
                                ELSE h.seq END,
                           h.id, h.priority, h.seq, h.ram_required, h.cpu_required, h.gpu_required, x.starts
                    FROM walk w
                    JOIN input i ON i.cluster = w.cluster AND i.k = w.k + 1
                    LEFT JOIN LATERAL (
                        \(lookUpSQL(.queue, cluster: "w.cluster", from: ("w.pending_from_priority", "w.pending_from_seq"), limit: "1"))
                    ) h ON true
                    CROSS JOIN LATERAL (
                        SELECT coalesce(h.ram_required <= w.ram + i.ram AND h.cpu_required <= w.cpu + i.cpu
                                        AND h.gpu_required <= w.gpu + i.gpu, false) AS starts
                        OFFSET 0
                    ) f
                    CROSS JOIN LATERAL (
                        SELECT f.starts, w.ram + i.ram - CASE WHEN f.starts THEN h.ram_required ELSE 0 END AS left_ram,
                               w.cpu + i.cpu - CASE WHEN f.starts THEN h.cpu_required ELSE 0 END AS left_cpu,
                               w.gpu + i.gpu - CASE WHEN f.starts THEN h.gpu_required ELSE 0 END AS left_gpu
                    ) x
                    CROSS JOIN LATERAL (
                        SELECT i.allowed AND i.id <> ALL(w.done)
                               AND (h.id IS NULL
                                    OR (h.priority <= i.priority
                                        AND NOT EXISTS (SELECT FROM deployments r
                                                        WHERE \(sqlRunningBelow("r", cluster: "w.cluster", priority: "h.priority", from: "w.running_from_priority"))
                                                          AND r.id <> ALL(w.done))
                                        AND NOT coalesce(\(smallestFitsSQL(cluster: "w.cluster", except: "w.heads || h.id") { "x.left_\($0)" }),
                                                         false))) AS applies
                        OFFSET 0
                    ) s
                ), decided AS (
                    SELECT w.*, i.id, i.name, i.image_path, i.ram AS ram_required, i.cpu AS cpu_required,
                           i.gpu AS gpu_required, i.priority, i.seq, c.version + w.made AS version
                    FROM walk w JOIN input i ON i.n = w.n JOIN cluster c ON c.id = w.cluster
                    WHERE w.applies
                ), completed AS (
                    UPDATE deployments d SET status = 'Completed', finished_at = now()
                    FROM decided x WHERE d.id = x.id AND \(sqlStatus(of: "d", is: "Running"))
                ), started AS (
                    UPDATE deployments d SET status = 'Running', started_at = now()
                    FROM decided x WHERE x.starts AND d.id = x.head AND \(sqlStatus(of: "d", is: "Pending"))
                ), events AS (
                    INSERT INTO deployment_events (deployment_id, cluster_id, kind)
                    SELECT e.id, x.cluster, e.kind
                    FROM decided x CROSS JOIN LATERAL (
                        VALUES (x.id, 'Completed'::deployment_event_kind, 1),
                               (CASE WHEN x.starts THEN x.head END, 'Started', 2)
                    ) e(id, kind, o)
                    WHERE e.id IS NOT NULL
                    ORDER BY x.n, e.o
                ), updated AS (
                    UPDATE clusters c
                    SET available_ram = l.ram, available_cpu = l.cpu, available_gpu = l.gpu, version = c.version + l.made,
                        running_from_priority = l.running_from_priority, running_from_seq = l.running_from_seq,
                        pending_from_priority = l.pending_from_priority, pending_from_seq = l.pending_from_seq
                    FROM (SELECT DISTINCT ON (x.cluster) * FROM decided x ORDER BY x.cluster, x.k DESC) l
                    WHERE c.id = l.cluster
                )
                SELECT x.id, x.name, x.cluster, x.image_path, x.ram_required, x.cpu_required, x.gpu_required,
                       'Completed', x.priority, x.seq, x.version, x.ram, x.cpu, x.gpu,
                       x.head, x.head_priority, x.head_seq, x.head_ram, x.head_cpu, x.head_gpu, x.starts, x.n
                FROM decided x
                ORDER BY x.n
                """)
    }

    /// The caller (no row: unknown user or revoked token) and the cluster `$3` (NULLs: not found or not theirs):
    /// its capacity, accounting, next `seq` and version, and what the running ones of priority `$4` or higher leave
    /// free (`sqlFreeAtPriority`).
    static let clusterForWhatIf = Statement(
        name: "sched_cluster_for_what_if",
        sql: """
            SELECT c.total_ram, c.total_cpu, c.total_gpu, c.available_ram, c.available_cpu, c.available_gpu,
                   c.next_seq, c.version, free.ram, free.cpu, free.gpu
            FROM users u LEFT JOIN clusters c ON c.id = $3 AND \(sqlInScope("c"))
            LEFT JOIN \(sqlFreeAtPriority("c", "$4")) free ON c.id IS NOT NULL
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    /// The caller (no row: unknown user or revoked token), the cluster `$3` if it is theirs, and how many of its
    /// deployments are active, read after the lock.
    static let clusterForDelete = Statement(
        name: "sched_cluster_for_delete",
        sql: """
            SELECT c.id, (SELECT count(*) FROM deployments d
                          WHERE d.cluster_id = c.id AND d.status IN ('Pending', 'Running'))
            FROM users u LEFT JOIN clusters c ON c.id = $3 AND \(sqlInScope("c"))
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)
    /// How many pending deployments of cluster `$1` come before priority `$2` and `seq` `$3` in scheduling order: two
    /// index-only counts along `deployments_pending_order`. Each is a row comparison, which no other index can take as
    /// an index condition (`priority > $2` alone was counted along another pending index in a plan made without
    /// statistics).
    static let pendingAhead = Statement(
        name: "sched_pending_ahead",
        sql: """
            SELECT (SELECT count(*) FROM deployments
                    WHERE cluster_id = $1 AND status = 'Pending' AND (priority, seq) > ($2, \(Int64.max)))
                 + (SELECT count(*) FROM deployments
                    WHERE cluster_id = $1 AND status = 'Pending' AND priority = $2 AND (priority, seq) < ($2, $3))
            """)
    /// How many deployments of cluster `$1` run and wait.
    static let sizes = Statement(
        name: "sched_sizes",
        sql: """
            SELECT (SELECT count(*) FROM deployments r WHERE r.cluster_id = $1 AND r.status = 'Running'),
                   (SELECT count(*) FROM deployments p WHERE p.cluster_id = $1 AND p.status = 'Pending')
            """)
    /// A cluster `$1` and its history: its events, its deployments (whose foreign key names it), then the cluster.
    static let deleteCluster = [
        // Found through the cluster's deployments: events have no index on `cluster_id` (a scan of every event).
        Statement(
            name: "sched_delete_events",
            sql:
                "DELETE FROM deployment_events WHERE deployment_id IN (SELECT id FROM deployments WHERE cluster_id = $1)"
        ),
        Statement(name: "sched_delete_deployments", sql: "DELETE FROM deployments WHERE cluster_id = $1"),
        Statement(name: "sched_delete_cluster", sql: "DELETE FROM clusters WHERE id = $1"),
    ]

    /// The caller (no row: unknown user or revoked token) and the cluster (NULLs: not found or not theirs), with the
    /// new deployment's id drawn only when the cluster is there.
    static let clusterForCreate = Statement(
        name: "sched_cluster_for_create",
        sql: """
            SELECT c.total_ram, c.total_cpu, c.total_gpu, c.available_ram, c.available_cpu, c.available_gpu,
                   c.next_seq, c.organization_id, c.version,
                   CASE WHEN c.id IS NOT NULL THEN nextval('deployments_id_seq') END
            FROM users u LEFT JOIN clusters c ON c.id = $3 AND \(sqlInScope("c"))
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    /// `lock` for every cluster a batch changes (`ClusterScheduler.makeTogether`): the clusters `$1` (creates) and those
    /// of the deployments `$2` (completions), in ascending order, so that batches cannot deadlock (a batch waits only
    /// for a lock above every lock it holds, and every other change takes one). It also records the clusters it
    /// locked in `hv.locked` for the completions to check (`sqlLocked`): a deployment this statement could not see yet
    /// (its create committed since) has its cluster unlocked.
    static let lockClusters = Statement(
        name: "sched_lock_clusters",
        sql: """
            WITH locked AS (
                SELECT k.cluster_id, pg_advisory_xact_lock(k.cluster_id) FROM (
                    SELECT unnest($1::bigint[]) AS cluster_id
                    UNION SELECT d.cluster_id FROM deployments d WHERE d.id = ANY($2::bigint[])
                    ORDER BY 1
                ) k
            )
            SELECT set_config('hv.locked', coalesce(string_agg(cluster_id::text, ','), ''), true),
                   set_config('synchronous_commit', 'off', true)
            FROM locked
            """)
    /// The statements a batch runs under its clusters' locks, planned as soon as a connection opens (`Database`).
    static let planned = [lockClusters, createAll, completeAll]
    /// Whether the cluster `column` is one `lockClusters` locked in this transaction.
    private static func sqlLocked(_ column: String) -> String {
        "\(column) = ANY(string_to_array(current_setting('hv.locked', true), ',')::bigint[])"
    }
    /// `lock` for the cluster of the deployment `$3` (cluster ids never change, so this statement's own snapshot is
    /// fine).
    static let lockDeployment = Statement(
        name: "sched_lock_deployment",
        sql: """
            SELECT pg_advisory_xact_lock(d.cluster_id), set_config('synchronous_commit', 'off', true)
            FROM users u JOIN deployments d ON d.id = $3 AND \(sqlInScope("d"))
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)
    /// The deployment and its cluster, read after the lock.
    static let deploymentForComplete = Statement(
        name: "sched_deployment_for_complete",
        sql: """
            SELECT d.id, d.name, d.cluster_id, d.image_path, d.ram_required, d.cpu_required, d.gpu_required, d.status,
                   d.priority, d.seq, c.available_ram, c.available_cpu, c.available_gpu
            FROM users u LEFT JOIN deployments d ON d.id = $3 AND \(sqlInScope("d"))
            LEFT JOIN clusters c ON c.id = d.cluster_id
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    /// The first `$2` pending deployments ordered after the running deployment `$1` (every pending one of its priority
    /// or lower) in scheduling order: `$2` steps down `deployments_pending_order`. The first is the queue head.
    static let queueAfterDeployment = Statement(
        name: "sched_queue_after_deployment",
        sql: queueAfterSQL(
            columns: "p.id, p.priority, p.seq, p.ram_required, p.cpu_required, p.gpu_required", limit: "$2"))
    private static func queueAfterSQL(columns: String, limit: String) -> String {
        """
        SELECT \(columns) FROM deployments p
        WHERE p.cluster_id = (SELECT d.cluster_id FROM deployments d WHERE d.id = $1) AND p.status = 'Pending'
          AND p.priority <= (SELECT d.priority FROM deployments d WHERE d.id = $1)
        ORDER BY p.priority DESC, p.seq LIMIT \(limit)
        """
    }
    /// The running deployments below the priority of the queue head after the deployment `$1` (none without a head).
    static let runningBelowQueueHead = Statement(
        name: "sched_running_below_queue_head",
        sql: """
            SELECT r.id, r.priority, r.seq, r.ram_required, r.cpu_required, r.gpu_required
            FROM clusters c JOIN deployments r
                ON \(sqlRunningBelow("r", cluster: "c.id", priority: "(\(queueAfterSQL(columns: "p.priority", limit: "1")))", from: "c.running_from_priority"))
            WHERE c.id = (SELECT d.cluster_id FROM deployments d WHERE d.id = $1)
            """)
    /// Running deployments below priority `$2` in reverse scheduling order, after the cursor `(priority $3, seq $4)`,
    /// or (both NULL) from where the cluster's running tail starts (`running_from`), at most `$5`: `lookUpSQL`.
    static let runningFromTail = Statement(
        name: "sched_running_from_tail",
        sql: """
            WITH start AS (
                SELECT coalesce($3::integer, c.running_from_priority) AS priority,
                       coalesce($4::bigint - 1, c.running_from_seq) AS seq
                FROM clusters c WHERE c.id = $1
            )
            \(lookUpSQL(
                .runningTail, cluster: "$1", from: ("(SELECT priority FROM start)", "(SELECT seq FROM start)"),
                condition: "d.priority < $2", limit: "$5"))
            """)
    /// No more than any pending request of the cluster `$1` in every dimension (NULLs: nothing is pending): three
    /// look-ups at the start of `deployments_pending_ram/cpu/gpu`.
    static let pendingMinimum = Statement(name: "sched_pending_minimum", sql: pendingMinimumSQL(cluster: "$1"))
    /// `pendingMinimum` for the cluster of the deployment `$1`.
    static let pendingMinimumForCompletion = Statement(
        name: "sched_pending_minimum_for_completion",
        sql: pendingMinimumSQL(cluster: "(SELECT d.cluster_id FROM deployments d WHERE d.id = $1)"))
    /// The two orders the scheduler's look-ups walk in from a recorded start: the running set's tail (lowest priority,
    /// then latest `seq`: the order a preempting create evicts in) along `deployments_running`, and the queue
    /// (scheduling order) along `deployments_pending_order`.
    private enum LookUp {
        case runningTail, queue
    }
    /// At most `limit` deployments `d` of `cluster` meeting `condition`, in the order of `lookUp` from the position
    /// `from` (`priority`, `seq` as SQL) on: two range scans of the status's index that start there, one within the
    /// start's priority from its `seq` (`sqlOnePriority`), one past it. Entries of deployments that left the set stay in
    /// the index until a vacuum and gather where these look-ups start (each preemption leaves one at the tail, each
    /// start of a queue head one at the head), so a look-up from the index's end passed over every one of them;
    /// `running_from` and `pending_from` on `clusters` (migration 7) are where they end.
    private static func lookUpSQL(
        _ lookUp: LookUp, cluster: String, from: (priority: String, seq: String), condition: String? = nil,
        limit: String
    ) -> String {
        let (status, past, fromSeq, order) =
            lookUp == .runningTail
            ? ("Running", ">", "<=", { (t: String) in "\(t).priority, \(t).seq DESC" })
            : ("Pending", "<", ">=", { (t: String) in "\(t).priority DESC, \(t).seq" })
        let columns = "d.id, d.priority, d.seq, d.ram_required, d.cpu_required, d.gpu_required"
        let set = (condition.map { "\($0) AND " } ?? "") + "d.cluster_id = \(cluster) AND d.status = '\(status)'"
        return """
            SELECT * FROM (
                (SELECT \(columns) FROM deployments d
                 WHERE \(set) AND \(sqlOnePriority("d", from.priority)) AND d.seq \(fromSeq) \(from.seq)
                 ORDER BY \(order("d")) LIMIT \(limit))
                UNION ALL
                (SELECT \(columns) FROM deployments d WHERE \(set) AND d.priority \(past) \(from.priority)
                 ORDER BY \(order("d")) LIMIT \(limit))
            ) t ORDER BY \(order("t")) LIMIT \(limit)
            """
    }
    /// `alias.priority` equal to `priority` (an SQL expression), written as a range of one value. An equality makes the
    /// priority a constant to the planner, and `ORDER BY seq` within it then also matches the cluster's
    /// `(cluster_id, seq)` key, which it took in some generic plans: a walk along every deployment created since,
    /// whatever its status. As a range the order is `(priority, seq)`, which only the status's own index gives, and
    /// that index still starts at `(priority, seq)` (B-tree positioning uses `>=`/`<=` on a column like `=`).
    private static func sqlOnePriority(_ alias: String, _ priority: String) -> String {
        "\(alias).priority >= \(priority) AND \(alias).priority <= \(priority)"
    }
    /// The row of each cluster named in the column `cluster` of the CTE `input`: `id`, `version`, `available_*`, where
    /// its look-ups start, and `columns`. Each is read by its primary key; the `OFFSET 0` keeps the planner from
    /// joining the whole table once its statistics say it is small.
    private static func inputClustersSQL(_ columns: String?) -> String {
        """
        SELECT c.* FROM (SELECT DISTINCT cluster FROM input) x CROSS JOIN LATERAL (
            SELECT c.id, c.version, c.available_ram, c.available_cpu, c.available_gpu, c.running_from_priority,
                   c.running_from_seq, c.pending_from_priority, c.pending_from_seq\(columns.map { ", " + $0 } ?? "")
            FROM clusters c WHERE c.id = x.cluster OFFSET 0
        ) c
        """
    }
    /// Of the positions `a` and `b` (`priority`, `seq` as SQL), the one the running set's tail reaches first (lower
    /// priority, then later `seq`), as its two expressions.
    private static func sqlFirstInTail(_ a: (String, String), _ b: (String, String)) -> [String] {
        sqlFirst(a, b, aFirst: "(\(a.0) < \(b.0) OR (\(a.0) = \(b.0) AND \(a.1) > \(b.1)))")
    }
    /// Of the positions `a` and `b`, the one first in scheduling order (higher priority, then earlier `seq`).
    private static func sqlFirstInQueue(_ a: (String, String), _ b: (String, String)) -> [String] {
        sqlFirst(a, b, aFirst: "(\(a.0) > \(b.0) OR (\(a.0) = \(b.0) AND \(a.1) < \(b.1)))")
    }
    private static func sqlFirst(_ a: (String, String), _ b: (String, String), aFirst: String) -> [String] {
        ["CASE WHEN \(aFirst) THEN \(a.0) ELSE \(b.0) END", "CASE WHEN \(aFirst) THEN \(a.1) ELSE \(b.1) END"]
    }
    /// Whether the smallest pending request of `cluster` fits in `room(dimension)` in every dimension, NULL when nothing
    /// is pending: like `pendingMinimum`, three index look-ups. The pending deployments in the array `except` are left
    /// out, and `queued` names the columns (`<queued>_ram`, …) holding the smallest requests a statement queued since
    /// its snapshot (NULL: none).
    private static func smallestFitsSQL(
        cluster: String, except: String? = nil, queued: String? = nil, room: (String) -> String
    ) -> String {
        dimensions.map { dimension in
            let smallest = smallestPendingSQL(dimension, cluster: cluster, except: except)
            return "\(queued.map { "least(\(smallest), \($0)_\(dimension))" } ?? smallest) <= \(room(dimension))"
        }.joined(separator: " AND ")
    }
    /// The smallest pending `dimension` request of `cluster`, besides the deployments in the array `except`: one
    /// look-up at the start of `deployments_pending_<dimension>`, whose predicate includes `<dimension>_required >= 0`
    /// (always true) so that no other statement can walk it (migration 6).
    private static func smallestPendingSQL(_ dimension: String, cluster: String, except: String? = nil) -> String {
        "(SELECT \(dimension)_required FROM deployments WHERE cluster_id = \(cluster) AND status = 'Pending'"
            + " AND \(dimension)_required >= 0" + (except.map { " AND id <> ALL(\($0))" } ?? "")
            + " ORDER BY \(dimension)_required LIMIT 1)"
    }
    private static let dimensions = ["ram", "cpu", "gpu"]
    private static func pendingMinimumSQL(cluster: String) -> String {
        "SELECT " + dimensions.map { smallestPendingSQL($0, cluster: cluster) }.joined(separator: ", ")
    }
    /// Pending deployments after the cursor `(priority $2, seq $3)` in scheduling order that fit in `($4, $5, $6)`,
    /// at most `$7`, in no particular order. Two index range scans (same priority, later seq; then lower priorities),
    /// so the cursor's depth costs nothing; the second runs only when the first finds fewer than `$7`. (Merged with
    /// `ORDER BY` instead, the second scan would have to find its first row before any row is returned: every
    /// lower-priority pending deployment when none of them fits.)
    static let pendingAfter = Statement(
        name: "sched_pending_after",
        sql: """
            WITH same AS (
                SELECT id, priority, seq, ram_required, cpu_required, gpu_required FROM deployments
                WHERE cluster_id = $1 AND status = 'Pending' AND \(sqlOnePriority("deployments", "$2")) AND seq > $3
                  AND ram_required <= $4 AND cpu_required <= $5 AND gpu_required <= $6
                ORDER BY priority DESC, seq LIMIT $7
            )
            SELECT * FROM same
            UNION ALL
            (SELECT id, priority, seq, ram_required, cpu_required, gpu_required FROM deployments
             WHERE cluster_id = $1 AND status = 'Pending' AND priority < $2
               AND ram_required <= $4 AND cpu_required <= $5 AND gpu_required <= $6
             ORDER BY priority DESC, seq LIMIT $7 - (SELECT count(*) FROM same))
            """)

    /// Every write of one change as one statement: the new deployment (a create), the deployment that ends (`$8`,
    /// completed or cancelled as `$23`), the plan's starts and preemptions, the events and the cluster's accounting,
    /// with where the look-ups of the running set's tail and of the queue's head start (`lookUpSQL`) moved back to any
    /// deployment that started or waits ahead of them. Returns the new version and how many deployment rows changed,
    /// which must be exactly the plan's.
    static let apply = Statement(
        name: "sched_apply",
        sql: """
            WITH inserted AS (
                INSERT INTO deployments (id, cluster_id, organization_id, owner_id, name, image_path, ram_required,
                                         cpu_required, gpu_required, priority, status, seq, started_at)
                SELECT $12, $1, $13, $14, $15, $16, $17, $18, $19, $20, $21::deployment_status, $22,
                       CASE WHEN $21::deployment_status = 'Running' THEN now() END
                WHERE $12::bigint IS NOT NULL
                RETURNING id, priority, seq, status
            ), ended AS (
                UPDATE deployments SET status = $23::deployment_status, finished_at = now()
                WHERE id = $8 AND \(sqlStatus(of: "deployments", is: "Pending", "Running")) RETURNING id
            ), started AS (
                UPDATE deployments SET status = 'Running', started_at = now()
                WHERE id = ANY($6::bigint[]) AND \(sqlStatus(of: "deployments", is: "Pending"))
                RETURNING id, priority, seq
            ), preempted AS (
                UPDATE deployments SET status = 'Pending', preemptions = preemptions + 1
                WHERE id = ANY($7::bigint[]) AND \(sqlStatus(of: "deployments", is: "Running"))
                RETURNING id, priority, seq
            ), events AS (
                INSERT INTO deployment_events (deployment_id, cluster_id, kind, caused_by)
                SELECT e.deployment, $1, e.kind, e.cause
                FROM unnest($9::bigint[], $10::deployment_event_kind[], $11::bigint[]) AS e(deployment, kind, cause)
            )
            UPDATE clusters SET available_ram = $2, available_cpu = $3, available_gpu = $4,
                                next_seq = coalesce($5, next_seq), version = version + 1,
                                (running_from_priority, running_from_seq) = (
                                    SELECT * FROM (SELECT running_from_priority, running_from_seq
                                                   UNION ALL SELECT priority, seq FROM started
                                                   UNION ALL SELECT priority, seq FROM inserted
                                                             WHERE status = 'Running') f(priority, seq)
                                    ORDER BY priority, seq DESC LIMIT 1),
                                (pending_from_priority, pending_from_seq) = (
                                    SELECT * FROM (SELECT pending_from_priority, pending_from_seq
                                                   UNION ALL SELECT priority, seq FROM preempted
                                                   UNION ALL SELECT priority, seq FROM inserted
                                                             WHERE status = 'Pending') f(priority, seq)
                                    ORDER BY priority DESC, seq LIMIT 1)
            WHERE id = $1
            RETURNING version, (SELECT count(*) FROM inserted) + (SELECT count(*) FROM ended)
                + (SELECT count(*) FROM started) + (SELECT count(*) FROM preempted)
            """)
}

/// A whole cluster as PostgreSQL has it, read in one statement: what `settle` plans from, what a snapshot rebuild
/// writes to Redis, and what `hvctl fsck` checks.
struct ClusterRecord {
    var version: Int64
    var capacity: Resources
    var available: Resources
    var active: [ActiveDeployment]

    /// Where the scheduler's look-ups of the running set's tail and of the queue's head start (migration 7).
    var runningFrom = (priority: Int32.min, seq: Int64.max)
    var pendingFrom = (priority: Int32.max, seq: Int64(0))

    var snapshot: ClusterSnapshot { ClusterSnapshot(capacity: capacity, active: active) }
    /// What the running deployments hold: `capacity - available` when the accounting is right.
    var running: Resources { active.filter(\.isRunning).map(\.request).reduce(Resources(), +) }
    /// The active deployments those look-ups would miss: running ones before `runningFrom` along the tail (lower
    /// priority, then later `seq`), pending ones before `pendingFrom` in scheduling order. None when all is well.
    var missedByLookUps: [Int64] {
        active.filter { deployment in
            let (priority, seq) = deployment.isRunning ? runningFrom : pendingFrom
            let start = ActiveDeployment(
                id: 0, priority: priority, seq: seq, request: Resources(), isRunning: deployment.isRunning)
            // The tail is the running set in reverse scheduling order.
            return deployment.isRunning ? start.schedulesBefore(deployment) : deployment.schedulesBefore(start)
        }.map(\.id)
    }

    /// Every active deployment of cluster `$1` with the cluster's columns (one row of NULL deployment columns when
    /// there is none; no row when there is no such cluster).
    static let statement = Statement(
        name: "cluster_record",
        sql: """
            SELECT c.version, c.total_ram, c.total_cpu, c.total_gpu, c.available_ram, c.available_cpu, c.available_gpu,
                   d.id, d.priority, d.seq, d.ram_required, d.cpu_required, d.gpu_required, d.status = 'Running',
                   c.running_from_priority, c.running_from_seq, c.pending_from_priority, c.pending_from_seq
            FROM clusters c
            LEFT JOIN deployments d ON d.cluster_id = c.id AND d.status IN ('Pending', 'Running')
            WHERE c.id = $1
            """)

    /// - Throws: `PostgresError`.
    static func read(_ cluster: Int64, _ connection: PostgresConnection) throws -> ClusterRecord? {
        ClusterRecord(try connection.execute(statement, [String(cluster)]))
    }
}

/// Decoding in an extension keeps the memberwise initializer (for tests that build a record by hand).
extension ClusterRecord {
    /// Decodes `statement`'s rows; nil when there is no such cluster.
    init?(_ result: PostgresResult) {
        guard result.rowCount > 0, let version = result.int(0, 0), let capacity = result.resources(1),
            let available = result.resources(4)
        else { return nil }
        self.version = version
        self.capacity = capacity
        self.available = available
        runningFrom = (Int32(result.int(0, 14) ?? Int64(Int32.min)), result.int(0, 15) ?? Int64.max)
        pendingFrom = (Int32(result.int(0, 16) ?? Int64(Int32.max)), result.int(0, 17) ?? 0)
        active = (0..<result.rowCount).compactMap { row in
            result.int(row, 7) == nil ? nil : ActiveDeployment(result, row: row, from: 7, running: result.bool(row, 13))
        }
    }
}

/// A deployment as the seed API shows it.
struct DeploymentRow: Equatable {
    var id: Int64
    var name: String
    var clusterID: Int64
    var imagePath: String
    var request: Resources
    var status: String
    var priority: Int32

    init(
        id: Int64, name: String, clusterID: Int64, imagePath: String, request: Resources, status: String,
        priority: Int32
    ) {
        self.id = id
        self.name = name
        self.clusterID = clusterID
        self.imagePath = imagePath
        self.request = request
        self.status = status
        self.priority = priority
    }

    /// Reads `id, name, cluster_id, image_path, ram/cpu/gpu_required, status, priority`; nil when the LEFT JOIN
    /// found no deployment.
    init?(_ result: PostgresResult, row: Int) {
        guard let id = result.int(row, 0), let name = result.string(row, 1) else { return nil }
        self.init(
            id: id, name: name, clusterID: result.int(row, 2) ?? 0, imagePath: result.string(row, 3) ?? "",
            request: Resources(
                ram: result.int(row, 4) ?? 0, cpu: result.int(row, 5) ?? 0, gpu: result.int(row, 6) ?? 0),
            status: result.string(row, 7) ?? "", priority: Int32(result.int(row, 8) ?? 0))
    }

    /// `{"id", "name", "cluster_id", "image_path", "ram_required", "cpu_required", "gpu_required", "status", "priority"}`.
    func write(to json: inout JSONWriter) {
        json.beginObject()
        writeMembers(to: &json)
        json.endObject()
    }

    /// The members of `write(to:)`, for representations that extend the seed object (v1).
    func writeMembers(to json: inout JSONWriter) {
        json.key("id")
        json.value(id)
        json.key("name")
        json.value(name)
        json.key("cluster_id")
        json.value(clusterID)
        json.key("image_path")
        json.value(imagePath)
        json.key("ram_required")
        json.value(request.ram)
        json.key("cpu_required")
        json.rawNumber(JSONNumber.text(millicores: request.cpu))
        json.key("gpu_required")
        json.value(request.gpu)
        json.key("status")
        json.value(status)
        json.key("priority")
        json.value(Int64(priority))
    }
}
