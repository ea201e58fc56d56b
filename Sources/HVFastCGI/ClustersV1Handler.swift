import Domain

/// The v1 cluster resources: `GET /v1/clusters/{id}` (the seed object with its tenant, creation time, how many
/// deployments run and wait, and how full it is), `GET /v1/clusters` (a page of them), `DELETE /v1/clusters/{id}`,
/// `GET /v1/clusters/{id}/queue` (its Redis queue snapshot, a page at a time, with the version it came from) and
/// `POST /v1/clusters/{id}/what-if` (a dry run of a create).
struct ClustersV1Handler {
    let database: Database
    let authenticator: Authenticator
    let queue: DeploymentQueue
    let scheduler: ClusterScheduler

    var routes: [Route] {
        [
            Route("GET", "/v1/clusters", list),
            Route("GET", "/v1/clusters/{id}", get),
            Route("DELETE", "/v1/clusters/{id}", delete),
            Route("GET", "/v1/clusters/{id}/queue", queuePage),
            Route("POST", "/v1/clusters/{id}/what-if", whatIf),
        ]
    }

    /// The caller (no row: unknown user or revoked token) and the cluster `$3` in their scope, with its tenant,
    /// creation time and version.
    static let detail = Statement(
        name: "v1_cluster",
        sql: """
            SELECT \(ClustersHandler.columns), c.organization_id, c.created_at, c.version
            FROM users u LEFT JOIN clusters c ON c.id = $3 AND \(sqlInScope("c"))
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    /// The caller (no row: unknown user or revoked token) and up to `$4` clusters of their scope after id `$3` (one
    /// row of NULLs when there are none).
    static let page: Statement = {
        let walk = sqlScopedWalk("c", last: "id", after: "$3")
        return Statement(
            name: "v1_clusters_page",
            sql: """
                SELECT \(ClustersHandler.columns), c.organization_id, c.created_at
                FROM users u LEFT JOIN LATERAL (
                    SELECT * FROM clusters c WHERE \(walk.condition) ORDER BY \(walk.order) LIMIT $4
                ) c ON true
                WHERE u.id = $1 AND u.tokens_valid_after <= $2
                ORDER BY c.id
                """)
    }()

    /// The cluster with the sizes of its running set and queue: from the Redis snapshot when it shows the very
    /// version PostgreSQL showed (O(1)), else counted in the same read-only snapshot of PostgreSQL.
    private func get(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        let parameters = [String(caller.id), String(caller.issuedAt), String(id)]
        let (result, cluster, sizes) = try database.run { connection in
            try connection.inSnapshot([(ClustersV1Handler.detail, parameters)]) { results in
                let result = results[0]
                guard result.rowCount == 1 else { throw HTTPError.unauthorized }
                guard let cluster = ClusterRow(result, row: 0, column: 0), let version = result.int(0, 10) else {
                    throw HTTPError(404, "Cluster not found")
                }
                return (result, cluster, try scheduler.sizes(of: id, atVersion: version, connection))
            }
        }
        return .json(for: caller.id) { json in
            json.beginObject()
            ClustersV1Handler.writeSummary(cluster, result, 0, to: &json)
            json.key("running_count")
            json.value(sizes.running)
            json.key("pending_count")
            json.value(sizes.pending)
            json.endObject()
        }
    }

    /// A page in id order. Items leave out `running_count` and `pending_count`, which cost two counts per item.
    private func list(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        var issues: [ValidationFailure.Issue] = []
        let (limit, after) = pageParameters(request, cursor: positiveID, issues: &issues)
        guard issues.isEmpty else { throw ValidationFailure(issues) }
        let result = try database.run {
            try $0.execute(
                ClustersV1Handler.page,
                [String(caller.id), String(caller.issuedAt), String(after ?? 0), String(limit + 1)])
        }
        guard result.rowCount > 0 else { throw HTTPError.unauthorized }
        return pageResponse(result, limit: limit, for: caller) { row, json in
            ClustersV1Handler.writeSummary(ClusterRow(result, row: row, column: 0)!, result, row, to: &json)
        }
    }

    /// Deletes a cluster with nothing pending or running, with its finished deployments and their events (`409`
    /// otherwise), and its queue snapshot.
    private func delete(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        try scheduler.delete(id, by: caller)
        return Response(status: 204, body: [], userID: caller.id)
    }

    /// The seed object's members, `organization_id`, `created_at` (columns 8 and 9 of `row`) and `utilization`.
    private static func writeSummary(
        _ cluster: ClusterRow, _ result: PostgresResult, _ row: Int, to json: inout JSONWriter
    ) {
        cluster.writeMembers(to: &json)
        json.key("organization_id")
        json.value(result.int(row, 8))
        json.key("created_at")
        json.value(result.timestamp(row, 9) ?? "")
        json.key("utilization")
        json.beginObject()
        let used = cluster.total - cluster.available
        for (name, used, total) in [
            ("ram", used.ram, cluster.total.ram), ("cpu", used.cpu, cluster.total.cpu),
            ("gpu", used.gpu, cluster.total.gpu),
        ] {
            json.key(name)
            json.rawNumber(fraction(used, of: total))
        }
        json.endObject()
    }

    /// The snapshot page after `cursor`. A cluster without a snapshot (never published, or lost by Redis) gets one
    /// rebuilt from PostgreSQL first. With Redis down the same page comes from PostgreSQL: Redis down degrades, it
    /// never fails a call (OPERATIONS.md).
    private func queuePage(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        var issues: [ValidationFailure.Issue] = []
        let (limit, cursor) = pageParameters(request, cursor: DeploymentQueue.Cursor.init, issues: &issues)
        guard issues.isEmpty else { throw ValidationFailure(issues) }
        let found = try database.run { try $0.executeAsCaller(ClustersV1Handler.detail, caller, [String(id)]) }
        guard found.int(0, 0) != nil else { throw HTTPError(404, "Cluster not found") }
        var page = try snapshotPage(id, after: cursor, limit: limit)
        if page == nil, let record = try database.run({ try ClusterRecord.read(id, $0) }) {
            page = DeploymentQueue.page(of: record, after: cursor, limit: limit)
        }
        guard let page else { throw HTTPError(404, "Cluster not found") }
        return .json(for: caller.id) { json in
            json.beginObject()
            json.key("cluster_id")
            json.value(id)
            json.key("version")
            json.value(page.version)
            json.key("available")
            json.beginObject()
            json.key("ram")
            json.value(page.available.ram)
            json.key("cpu")
            json.rawNumber(JSONNumber.text(millicores: page.available.cpu))
            json.key("gpu")
            json.value(page.available.gpu)
            json.endObject()
            json.key("running_count")
            json.value(page.runningCount)
            json.key("pending_count")
            json.value(page.pendingCount)
            json.key("deployments")
            json.beginArray()
            for (deployment, position) in page.entries {
                json.beginObject()
                json.key("id")
                json.value(deployment.id)
                json.key("status")
                json.value(deployment.isRunning ? "Running" : "Pending")
                json.key("priority")
                json.value(Int64(deployment.priority))
                json.key("ram_required")
                json.value(deployment.request.ram)
                json.key("cpu_required")
                json.rawNumber(JSONNumber.text(millicores: deployment.request.cpu))
                json.key("gpu_required")
                json.value(deployment.request.gpu)
                json.key("queue_position")
                json.value(position)
                json.endObject()
            }
            json.endArray()
            json.key("next_cursor")
            json.value(page.next?.text)
            json.endObject()
        }
    }

    /// The page from the Redis snapshot, rebuilt first when missing; nil when Redis does not answer.
    private func snapshotPage(_ id: Int64, after cursor: DeploymentQueue.Cursor?, limit: Int) throws
        -> DeploymentQueue.Page?
    {
        do {
            if let page = try queue.page(id, after: cursor, limit: limit) { return page }
            try queue.rebuild(id, from: database)
            return try queue.page(id, after: cursor, limit: limit)
        } catch is RedisError {
            return nil
        }
    }

    /// A dry run of a create from the request and priority of a deployment body (`name`, `image_path` and
    /// `cluster_id` may be there and are ignored): would it run, whom would it preempt, or where and why would it wait.
    private func whatIf(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        var input = try Input(request)
        let demand = input.deploymentRequest()
        try input.validate()
        guard let demand else { throw ValidationFailure(input.issues) }
        let outcome = try scheduler.whatIf(demand.request, priority: demand.priority, in: id, by: caller)
        return .json(for: caller.id) { json in
            json.beginObject()
            json.key("cluster_id")
            json.value(id)
            json.key("version")
            json.value(outcome.version)
            json.key("would_run")
            json.value(outcome.wouldRun)
            for (key, ids) in [("preempts", outcome.preempts), ("also_starts", outcome.alsoStarts)] {
                json.key(key)
                json.beginArray()
                for id in ids { json.value(id) }
                json.endArray()
            }
            json.key("queue_position")
            json.value(outcome.queuePosition)
            json.key("pending_reason")
            json.value(outcome.pendingReason)
            json.endObject()
        }
    }
}

/// `used / total` as a JSON number with four decimals (0 for an empty dimension).
private func fraction(_ used: Int64, of total: Int64) -> String {
    guard total > 0 else { return "0.0" }
    return JSONNumber.text(Int64((Double(used) / Double(total) * 10_000).rounded()), decimals: 4)
}
