import Domain

/// The v1 deployment resources: `GET /v1/deployments/{id}` (the seed object with its timestamps, preemptions, queue
/// position and why it waits), `GET /v1/deployments` (a page of them, filtered), `GET /v1/deployments/{id}/events`
/// (its history) and `POST /v1/deployments/{id}/cancel`.
///
/// Each answer comes from one consistent snapshot of PostgreSQL: every change to a cluster is one transaction, so a
/// pending deployment's position and reason are those of a settled cluster.
struct DeploymentsV1Handler {
    let database: Database
    let authenticator: Authenticator
    let scheduler: ClusterScheduler

    var routes: [Route] {
        [
            Route("GET", "/v1/deployments", list),
            Route("GET", "/v1/deployments/{id}", get),
            Route("GET", "/v1/deployments/{id}/events", events),
            Route("POST", "/v1/deployments/{id}/cancel", cancel),
        ]
    }

    /// The caller (no row: unknown user or revoked token) and the deployment `$3` in their scope, with, when it is
    /// pending, what the deployments ahead of it leave free (`Scheduler.pendingReason`, `sqlFreeAtPriority`), its
    /// cluster's version and its `seq`.
    static let detail = Statement(
        name: "v1_deployment",
        sql: """
            SELECT \(summaryColumns), free.ram, free.cpu, free.gpu, c.version, d.seq
            FROM users u
            LEFT JOIN deployments d ON d.id = $3 AND \(sqlInScope("d"))
            LEFT JOIN clusters c ON c.id = d.cluster_id AND d.status = 'Pending'
            LEFT JOIN \(sqlFreeAtPriority("c", "d.priority")) free ON c.id IS NOT NULL
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    /// Columns 0…12 of `detail`, the part a list shows.
    private static let summaryColumns = """
        d.id, d.name, d.cluster_id, d.image_path, d.ram_required, d.cpu_required, d.gpu_required, d.status,
        d.priority, d.created_at, d.started_at, d.finished_at, d.preemptions
        """

    /// The caller (no row: unknown user or revoked token) and up to `$4` deployments of their scope after id `$3`, in
    /// id order (one row of NULLs when there are none). Each combination of filters has a statement that walks an
    /// index in that order (`page(cluster:status:)`).
    private static func pageSQL(_ deployments: String) -> String {
        """
        SELECT \(summaryColumns)
        FROM users u LEFT JOIN LATERAL (\(deployments)) d ON true
        WHERE u.id = $1 AND u.tokens_valid_after <= $2
        ORDER BY d.id
        """
    }

    /// Unfiltered: the tenant's rows (`deployments_tenant_id`).
    static let pageOfAll: Statement = {
        let walk = sqlScopedWalk("d", last: "id", after: "$3")
        return Statement(
            name: "v1_deployments_page",
            sql: pageSQL("SELECT * FROM deployments d WHERE \(walk.condition) ORDER BY \(walk.order) LIMIT $4"))
    }()

    /// With `?cluster_id=` (`$5`) alone: the cluster's rows in `seq` order (`deployments_cluster_id_seq_key`), which
    /// is their id order, since a create draws both under the cluster's lock. The walk starts after the cursor's
    /// `seq`; a cursor that is not one of the cluster's deployments is reached by skipping the rows before it.
    static let pageOfCluster = Statement(
        name: "v1_deployments_page_cluster",
        sql: pageSQL(
            """
            SELECT * FROM deployments d
            WHERE d.cluster_id = $5 AND \(sqlInScope("d")) AND d.id > $3
              AND d.seq > coalesce((SELECT s.seq FROM deployments s WHERE s.id = $3 AND s.cluster_id = $5), 0)
            ORDER BY d.seq LIMIT $4
            """))

    /// With `?status=` (`$5`), and `?cluster_id=` (`$6`) when given: the tenant's rows of that status
    /// (`deployments_tenant_status`), the cluster filter applied along the way.
    static let pageOfStatus: Statement = {
        let walk = sqlScopedWalk("d", equal: [("status", "$5::deployment_status")], last: "id", after: "$3")
        return Statement(
            name: "v1_deployments_page_status",
            sql: pageSQL(
                """
                SELECT * FROM deployments d
                WHERE \(walk.condition) AND ($6::bigint IS NULL OR d.cluster_id = $6)
                ORDER BY \(walk.order) LIMIT $4
                """))
    }()

    /// The statement for these filters, and its parameters after the first four.
    static func page(cluster: Int64?, status: String?) -> (Statement, [String?]) {
        switch (cluster, status) {
        case (nil, nil): (pageOfAll, [])
        case (let cluster?, nil): (pageOfCluster, [String(cluster)])
        case (_, let status?): (pageOfStatus, [status, cluster.map { String($0) }])
        }
    }

    /// The caller, whether the deployment `$3` is in their scope (`d.id`, NULL otherwise), and its events oldest
    /// first (one row of NULL event columns when it has none).
    static let history = Statement(
        name: "v1_deployment_events",
        sql: """
            SELECT d.id, e.kind, e.at, e.caused_by
            FROM users u
            LEFT JOIN deployments d ON d.id = $3 AND \(sqlInScope("d"))
            LEFT JOIN deployment_events e ON e.deployment_id = d.id
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            ORDER BY e.id
            """)

    private func get(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        return try detail(try pathID(request), caller)
    }

    /// Cancels the deployment, then answers with it as `GET` would.
    private func cancel(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        _ = try scheduler.cancel(id, by: caller)
        return try detail(id, caller)
    }

    /// The deployment with, when it waits, its place in the queue: from the Redis snapshot when the snapshot shows the
    /// very version of the cluster PostgreSQL showed (a rank, O(log n) at any depth), else counted in PostgreSQL in
    /// the same read-only snapshot (as long as the queue ahead of it).
    private func detail(_ id: Int64, _ caller: Caller) throws -> Response {
        let (result, row, position) = try database.run { connection -> (PostgresResult, DeploymentRow, Int64?) in
            let parameters = [String(caller.id), String(caller.issuedAt), String(id)]
            return try connection.inSnapshot([(DeploymentsV1Handler.detail, parameters)]) { results in
                let result = results[0]
                guard result.rowCount == 1 else { throw HTTPError.unauthorized }
                guard let row = DeploymentRow(result, row: 0) else { throw HTTPError(404, "Deployment not found") }
                guard let version = result.int(0, 16), let seq = result.int(0, 17) else { return (result, row, nil) }
                let ahead = try scheduler.pendingAhead(
                    of: (row.priority, seq), in: row.clusterID, atVersion: version, connection)
                return (result, row, ahead + 1)
            }
        }
        let reason = result.resources(13).flatMap { Scheduler.pendingReason(request: row.request, free: $0) }
        return .json(for: caller.id) { json in
            json.beginObject()
            DeploymentsV1Handler.writeSummary(row, result, 0, to: &json)
            json.key("queue_position")
            json.value(position)
            json.key("pending_reason")
            json.value(reason)
            json.endObject()
        }
    }

    /// A page in id order. Items leave out `queue_position` and `pending_reason`, which cost a count and a sum per
    /// pending item; `GET /v1/deployments/{id}` and `GET /v1/clusters/{id}/queue` have them.
    private func list(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        var issues: [ValidationFailure.Issue] = []
        let (limit, after) = pageParameters(request, cursor: positiveID, issues: &issues)
        let cluster = request.query["cluster_id"].flatMap(positiveID)
        if request.query["cluster_id"] != nil && cluster == nil {
            issues.append(
                .init(
                    location: [.key("query"), .key("cluster_id")], message: "Input should be a positive integer",
                    type: "int_parsing"))
        }
        let status = request.query["status"]
        if let status, !["Pending", "Running", "Completed", "Cancelled"].contains(status) {
            issues.append(
                .init(
                    location: [.key("query"), .key("status")],
                    message: "Input should be 'Pending', 'Running', 'Completed' or 'Cancelled'", type: "enum"))
        }
        guard issues.isEmpty else { throw ValidationFailure(issues) }
        let (statement, filters) = DeploymentsV1Handler.page(cluster: cluster, status: status)
        let result = try database.run {
            try $0.execute(
                statement,
                [String(caller.id), String(caller.issuedAt), String(after ?? 0), String(limit + 1)] + filters)
        }
        guard result.rowCount > 0 else { throw HTTPError.unauthorized }
        return pageResponse(result, limit: limit, for: caller) { row, json in
            DeploymentsV1Handler.writeSummary(DeploymentRow(result, row: row)!, result, row, to: &json)
        }
    }

    /// The seed object's members and the v1 timestamps and preemptions, from `summaryColumns` of `row`.
    private static func writeSummary(
        _ deployment: DeploymentRow, _ result: PostgresResult, _ row: Int, to json: inout JSONWriter
    ) {
        deployment.writeMembers(to: &json)
        json.key("created_at")
        json.value(result.timestamp(row, 9) ?? "")
        json.key("started_at")
        json.value(result.timestamp(row, 10))
        json.key("finished_at")
        json.value(result.timestamp(row, 11))
        json.key("preemptions")
        json.value(result.int(row, 12) ?? 0)
    }

    private func events(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        let result = try database.run { try $0.executeAsCaller(DeploymentsV1Handler.history, caller, [String(id)]) }
        guard result.int(0, 0) != nil else { throw HTTPError(404, "Deployment not found") }
        return .json(for: caller.id) { json in
            json.beginObject()
            json.key("deployment_id")
            json.value(id)
            json.key("events")
            json.beginArray()
            for row in 0..<result.rowCount {
                guard let kind = result.string(row, 1) else { continue }
                json.beginObject()
                json.key("kind")
                json.value(kind)
                json.key("at")
                json.value(result.timestamp(row, 2) ?? "")
                json.key("caused_by")
                json.value(result.int(row, 3))
                json.endObject()
            }
            json.endArray()
            json.endObject()
        }
    }
}
