import Domain

/// Applies the scheduling policy to one cluster per PostgreSQL transaction.
///
/// Every change first takes `pg_advisory_xact_lock(cluster id)`, so changes to one cluster are serialized across all
/// workers and hosts while clusters proceed in parallel. The change itself is one call of `scheduler_create` or
/// `scheduler_complete` (migration 4), which apply `Scheduler`'s policy inside PostgreSQL reading only what can change
/// (`Scheduler.partForPreempting`, `partForCompleting`, `addPending`), so the lock is never held across a round trip
/// to the worker: `BEGIN`, the lock, the call and `COMMIT` travel together. The WAL flush happens after the lock is
/// released (`Statements.lock`, `Statements.durable`), so the next change to the cluster does not wait for this one's
/// fdatasync; the caller is answered only once the change is durable.
struct ClusterScheduler {
    let database: Database
    let queue: DeploymentQueue

    /// A deployment request that passed validation.
    struct NewDeployment {
        var name: String
        var imagePath: String
        var request: Resources
        var priority: Int32
    }

    /// A deployment the caller may see: their organization's, or their own when they have none.
    static let deploymentInScope =
        "(d.organization_id = u.organization_id OR (u.organization_id IS NULL AND d.organization_id IS NULL AND d.owner_id = u.id))"

    /// Creates a deployment in `clusterID` and schedules it.
    ///
    /// - Throws: `HTTPError` 401/404/422 for the client, `ServiceUnavailable` when PostgreSQL is down.
    func create(_ new: NewDeployment, in clusterID: Int64, by caller: Caller) throws -> DeploymentRow {
        let request = new.request
        let result = try inOneRoundTrip([
            (Statements.lock, [String(clusterID)]),
            (
                Statements.create,
                [
                    String(caller.id), String(caller.issuedAt), String(clusterID), new.name, new.imagePath,
                    String(request.ram), String(request.cpu), String(request.gpu), String(new.priority),
                ]
            ),
        ])[1]
        let outcome = Outcome(result, cluster: clusterID)
        switch outcome.refusal {
        case nil: break
        case 401: throw HTTPError.unauthorized
        case 404: throw HTTPError(404, "Cluster not found")
        case 422: throw HTTPError(422, "Not Enough Resources on the cluster for this deployment")
        case let code?: throw Outcome.unexpected(code, cluster: clusterID)
        }
        guard let created = outcome.subject else { throw Outcome.unexpected(nil, cluster: clusterID) }
        queue.publish(outcome.change, rebuildFrom: database)
        return DeploymentRow(
            id: created.id, name: new.name, clusterID: clusterID, imagePath: new.imagePath, request: request,
            status: created.isRunning ? "Running" : "Pending", priority: new.priority)
    }

    /// Completes a running deployment and schedules what its resources admit.
    ///
    /// - Throws: `HTTPError` 401/404/409 for the client, `ServiceUnavailable` when PostgreSQL is down.
    func complete(_ id: Int64, by caller: Caller) throws -> DeploymentRow {
        let parameters = [String(caller.id), String(caller.issuedAt), String(id)]
        let results = try inOneRoundTrip([
            (Statements.lockDeployment, parameters), (Statements.deploymentForComplete, parameters),
            (Statements.complete, parameters),
        ])
        // The function refuses in the same cases, from the same snapshot; this row names them for the client.
        let read = results[1]
        guard read.rowCount == 1 else { throw HTTPError.unauthorized }
        guard var row = DeploymentRow(read, row: 0) else { throw HTTPError(404, "Deployment not found") }
        guard row.status == "Running" else {
            throw HTTPError(409, "Deployment is \(row.status); only a Running deployment can be completed")
        }
        let outcome = Outcome(results[2], cluster: row.clusterID)
        guard outcome.refusal == nil, outcome.subject != nil else {
            throw Outcome.unexpected(outcome.refusal, cluster: row.clusterID)
        }
        queue.publish(outcome.change, rebuildFrom: database)
        row.status = "Completed"
        return row
    }

    /// `BEGIN`, `steps` and `COMMIT`, then `Statements.durable`, in one round trip. Returns `steps`' results.
    private func inOneRoundTrip(_ steps: [(Statement, [String?])]) throws -> [PostgresResult] {
        try database.run { connection in
            do {
                let results = try connection.pipeline(
                    [(Statements.begin, [])] + steps + [(Statements.commit, []), (Statements.durable, [])])
                return Array(results[1...steps.count])
            } catch {
                if connection.inTransaction { _ = try? connection.execute(Statements.rollback) }
                throw error
            }
        }
    }
}

/// What `scheduler_create` or `scheduler_complete` returned: rows of `kind, id, priority, seq, ram, cpu, gpu`.
private struct Outcome {
    /// The change to publish to the cluster's queue snapshot.
    var change: DeploymentQueue.Change
    /// The deployment the change was about: created (`R` running, `P` pending) or completed (`D`).
    var subject: ActiveDeployment?
    /// The HTTP status the function refused with (`E`), having changed nothing.
    var refusal: Int64?

    init(_ result: PostgresResult, cluster: Int64) {
        change = DeploymentQueue.Change(cluster: cluster, version: 0, available: Resources())
        for row in 0..<result.rowCount {
            let running = ActiveDeployment(result, row: row, running: true)
            let pending = ActiveDeployment(result, row: row, running: false)
            switch result.string(row, 0) {
            case "E": refusal = result.int(row, 1)
            case "R":
                subject = running
                change.addedRunning.append(running)
            case "P":
                subject = pending
                change.addedPending.append(pending)
            case "D":
                subject = running
                change.removedRunning.append(running)
            case "S":
                change.removedPending.append(pending)
                change.addedRunning.append(running)
            case "X":
                change.removedRunning.append(running)
                change.addedPending.append(pending)
            case "C":
                change.version = result.int(row, 1) ?? 0
                change.available = Resources(
                    ram: result.int(row, 4) ?? 0, cpu: result.int(row, 5) ?? 0, gpu: result.int(row, 6) ?? 0)
            default: break
            }
        }
    }

    /// An answer the functions never give under the lock (a bug, not the client's doing).
    static func unexpected(_ refusal: Int64?, cluster: Int64) -> PostgresError {
        PostgresError(
            sqlState: nil,
            message: "cluster \(cluster): unexpected scheduling result \(refusal.map(String.init) ?? "")",
            connectionLost: false)
    }
}

extension ActiveDeployment {
    /// Reads columns 1…6 of a scheduling function's row: `id, priority, seq, ram, cpu, gpu`.
    fileprivate init(_ result: PostgresResult, row: Int, running: Bool) {
        self.init(
            id: result.int(row, 1) ?? 0, priority: Int32(result.int(row, 2) ?? 0), seq: result.int(row, 3) ?? 0,
            request: Resources(
                ram: result.int(row, 4) ?? 0, cpu: result.int(row, 5) ?? 0, gpu: result.int(row, 6) ?? 0),
            isRunning: running)
    }
}

/// The SQL of `ClusterScheduler`, prepared once per connection.
private enum Statements {
    static let begin = Statement(name: "sched_begin", sql: "BEGIN")
    static let commit = Statement(name: "sched_commit", sql: "COMMIT")
    static let rollback = Statement(name: "sched_rollback", sql: "ROLLBACK")
    /// Takes the cluster's lock, and sets `transactionSettings`.
    static let lock = Statement(name: "sched_lock", sql: "SELECT pg_advisory_xact_lock($1), \(transactionSettings)")
    /// `lock` for the cluster of the deployment `$3` (cluster ids never change, so this statement's own snapshot is
    /// fine).
    static let lockDeployment = Statement(
        name: "sched_lock_deployment",
        sql: """
            SELECT pg_advisory_xact_lock(d.cluster_id), \(transactionSettings)
            FROM users u JOIN deployments d ON d.id = $3 AND \(ClusterScheduler.deploymentInScope)
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)
    /// For the rest of the transaction that holds the lock:
    /// - commit without waiting for the WAL flush, so that the lock is released before the flush; `durable` then waits
    ///   for it. A later change that read this one commits after it in the WAL, so a crash can never keep the later
    ///   change and lose this one.
    /// - run statements from their cached generic plans. Planning a scheduling statement takes up to ≈ 0.5 ms, and the
    ///   plan cache sometimes kept choosing custom plans (one bench run planned one 12,087 times in 21,245 runs),
    ///   which halved the cluster's throughput. The statements are written so that their generic plans use the
    ///   indexes.
    private static let transactionSettings =
        "set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)"
    /// Run right after a `COMMIT` made under `lock`, outside the lock: returns once that commit is on disk. Unless
    /// the WAL is already flushed as far as it was written (another commit's flush covered ours), it commits a
    /// transaction of its own with `synchronous_commit` on, whose flush covers every earlier commit record.
    static let durable = Statement(
        name: "sched_durable",
        sql: "SELECT CASE WHEN pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn() THEN pg_current_xact_id() END")

    /// `scheduler_create(caller, issued_at, cluster, name, image_path, ram, cpu, gpu, priority)`, after `lock`.
    static let create = Statement(
        name: "sched_create", sql: "SELECT * FROM scheduler_create($1, $2, $3, $4, $5, $6, $7, $8, $9)")
    /// `scheduler_complete(caller, issued_at, deployment)`, after `lockDeployment`.
    static let complete = Statement(name: "sched_complete", sql: "SELECT * FROM scheduler_complete($1, $2, $3)")
    /// The deployment and its status, read after the lock, for the answer.
    static let deploymentForComplete = Statement(
        name: "sched_deployment_for_complete",
        sql: """
            SELECT d.id, d.name, d.cluster_id, d.image_path, d.ram_required, d.cpu_required, d.gpu_required, d.status,
                   d.priority
            FROM users u LEFT JOIN deployments d ON d.id = $3 AND \(ClusterScheduler.deploymentInScope)
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)
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
        json.endObject()
    }
}
