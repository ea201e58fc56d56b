/// The worker's PostgreSQL access: one connection, opened as the worker starts (or on first use) and reopened with
/// back-off.
///
/// While PostgreSQL is unreachable every call throws `ServiceUnavailable` (a `503`), and the next call after
/// the back-off tries again, so the service recovers by itself without a restart.
final class Database {
    private let url: String
    private let log: Log
    /// Statements planned as soon as a connection opens (`PostgresConnection.explain`): otherwise a new connection
    /// parses and plans each batch statement at its first change, under the cluster's lock, while every other batch
    /// waits (≈ 10 ms for `createAll`; `docs/decisions.md`, "Plans made when a worker connects").
    private let planned: [Statement]
    private var connection: PostgresConnection?
    private var nextAttempt: Double = 0
    private var backoff: Double = 0

    init(url: String, log: Log, planned: [Statement] = []) {
        self.url = url
        self.log = log
        self.planned = planned
    }

    /// Connects now, so that a new worker connects and plans before it takes a request; when PostgreSQL cannot be
    /// reached, the first request tries again.
    func open() { _ = try? connected() }

    /// Runs `body` on the connection.
    ///
    /// - Throws: `ServiceUnavailable` when PostgreSQL cannot be reached or the connection drops;
    ///   otherwise whatever `body` throws.
    func run<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let connection = try connected()
        do {
            return try body(connection)
        } catch let error as PostgresError where error.connectionLost {
            drop(error)
            throw ServiceUnavailable(dependency: "PostgreSQL")
        }
    }

    private func connected() throws(ServiceUnavailable) -> PostgresConnection {
        if let connection, connection.isHealthy { return connection }
        connection = nil
        let now = monotonicSeconds()
        guard now >= nextAttempt else { throw ServiceUnavailable(dependency: "PostgreSQL") }
        do {
            let fresh = try PostgresConnection(url: url)
            do {
                for statement in planned { try fresh.explain(statement) }
            } catch let error where !error.connectionLost {
                log.warning("cannot plan the scheduler's statements ahead", ["error": error.message])
            }
            if backoff > 0 { log.info("reconnected to PostgreSQL") }
            backoff = 0
            connection = fresh
            return fresh
        } catch {
            backoff = min(2, max(0.05, backoff * 2))
            nextAttempt = now + backoff
            log.warning("cannot connect to PostgreSQL", ["error": error.message, "retry_in_s": String(backoff)])
            throw ServiceUnavailable(dependency: "PostgreSQL")
        }
    }

    private func drop(_ error: PostgresError) {
        log.warning("lost the PostgreSQL connection", ["error": error.message])
        connection = nil
        nextAttempt = 0
    }
}

extension PostgresConnection {
    private static let beginSnapshot = Statement(
        name: "snapshot_begin", sql: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    private static let endSnapshot = Statement(name: "snapshot_end", sql: "COMMIT")

    /// Sends `steps` in one round trip inside a read-only `REPEATABLE READ` transaction and runs `body` with their
    /// results, before the transaction ends: whatever `body` reads on the connection sees the same snapshot.
    ///
    /// - Throws: `PostgresError`, or what `body` throws.
    func inSnapshot<T>(_ steps: [(Statement, [String?])], _ body: ([PostgresResult]) throws -> T) throws -> T {
        defer { _ = try? execute(PostgresConnection.endSnapshot) }
        let results = try pipeline([(PostgresConnection.beginSnapshot, [])] + steps)
        return try body(Array(results.dropFirst()))
    }
}

/// Whether the row of table alias `row` (a cluster or a deployment) is in the scope of the caller `u`: both have the
/// same tenant key, the organization's id, or minus the owner's id for a user without one (ids are positive, so the
/// two never meet). Names are unique per key, and lists walk indexes on it in id order (migrations 4 and 5).
func sqlInScope(_ row: String) -> String {
    let key = sqlTenantKey(row)
    return "\(key.column) = \(key.value)"
}

/// The tenant key of table alias `row`, as the tenant indexes spell it, and the caller `u`'s.
private func sqlTenantKey(_ row: String) -> (column: String, value: String) {
    ("coalesce(\(row).organization_id, -\(row).owner_id)", "coalesce(u.organization_id, -u.id)")
}

/// A page of the caller's rows of table alias `row` along the tenant index on `(tenant key, equal…, last)`: the
/// condition that they are in scope, have the values `equal` gives its columns and come after `after` in `last`, and
/// the `ORDER BY` of that walk.
///
/// The last column before `last` is bounded by comparisons, `(column, last) > (value, after) AND column <= value`,
/// and the columns before it by equalities. With equalities only, the planner may walk the primary key in id order
/// instead and filter, which a cached generic plan does once one tenant or status holds most rows (a tenant with none
/// then reads the whole table). Ordered by a column it only bounds, the walk has no other index to take, and it stops
/// at the bound, since every column before it is fixed.
func sqlScopedWalk(_ row: String, equal: [(column: String, value: String)] = [], last: String, after: String)
    -> (condition: String, order: String)
{
    let prefix = [sqlTenantKey(row)] + equal.map { (column: "\(row).\($0.column)", value: $0.value) }
    let bounded = prefix[prefix.count - 1]
    let conditions =
        prefix.dropLast().map { "\($0.column) = \($0.value)" } + [
            "(\(bounded.column), \(row).\(last)) > (\(bounded.value), \(after))",
            "\(bounded.column) <= \(bounded.value)",
        ]
    return (conditions.joined(separator: " AND "), "\(bounded.column), \(row).\(last)")
}

/// The deployment `alias` runs in the cluster `cluster` below the priority `priority` (SQL expressions), read along
/// `deployments_running` down to `from`, where the cluster's running set starts (`running_from_priority`): below it
/// the index holds only entries of deployments that left the running set, which a read to the index's end would pass.
func sqlRunningBelow(_ alias: String, cluster: String, priority: String, from: String) -> String {
    "\(alias).cluster_id = \(cluster) AND \(alias).status = 'Running' AND \(alias).priority < \(priority)"
        + " AND \(alias).priority >= \(from)"
}

/// A `LATERAL` subquery giving `ram`, `cpu` and `gpu`: what the running deployments of cluster alias `cluster` at
/// priority `priority` (an SQL expression) or higher leave free, which is what a deployment of that priority could
/// have without preempting anyone. By the accounting that is `available` plus the running requests below it: the
/// shorter read along `deployments_running`, as waiting work mostly has lower priorities than running work.
func sqlFreeAtPriority(_ cluster: String, _ priority: String) -> String {
    """
    LATERAL (
        SELECT \(cluster).available_ram + coalesce(sum(r.ram_required), 0) AS ram,
               \(cluster).available_cpu + coalesce(sum(r.cpu_required), 0) AS cpu,
               \(cluster).available_gpu + coalesce(sum(r.gpu_required), 0) AS gpu
        FROM deployments r
        WHERE \(sqlRunningBelow("r", cluster: "\(cluster).id", priority: priority, from: "\(cluster).running_from_priority"))
    )
    """
}
