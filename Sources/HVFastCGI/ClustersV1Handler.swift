import Domain

/// The v1 cluster resources: `GET /v1/clusters/{id}` (the seed object with its tenant, creation time, how many
/// deployments run and wait, and how full it is), `GET /v1/clusters/{id}/queue` (its Redis queue snapshot, a page
/// at a time, with the version it came from) and `POST /v1/clusters/{id}/what-if` (a dry run of a create).
struct ClustersV1Handler {
    let database: Database
    let authenticator: Authenticator
    let queue: DeploymentQueue
    let scheduler: ClusterScheduler

    var routes: [Route] {
        [
            Route("GET", "/v1/clusters/{id}", get),
            Route("GET", "/v1/clusters/{id}/queue", queuePage),
            Route("POST", "/v1/clusters/{id}/what-if", whatIf),
        ]
    }

    /// Pages hold 100 deployments unless `limit` says otherwise, and never more than 1,000.
    static let defaultLimit = 100
    static let maximumLimit = 1000

    /// The caller (no row: unknown user or revoked token) and the cluster `$3` in their scope, with its tenant,
    /// creation time and the sizes of its running set and queue (index-only counts, consistent with the rest).
    private static let detail = Statement(
        name: "v1_cluster",
        sql: """
            SELECT \(ClustersHandler.columns), c.organization_id, \(sqlUTC("c.created_at")),
                   (SELECT count(*) FROM deployments r WHERE r.cluster_id = c.id AND r.status = 'Running'),
                   (SELECT count(*) FROM deployments p WHERE p.cluster_id = c.id AND p.status = 'Pending')
            FROM users u LEFT JOIN clusters c ON c.id = $3 AND \(ClustersHandler.inScope)
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    /// The caller and whether the cluster `$3` is in their scope (`c.id`, NULL otherwise).
    private static let visible = Statement(
        name: "v1_cluster_visible",
        sql: """
            SELECT c.id FROM users u LEFT JOIN clusters c ON c.id = $3 AND \(ClustersHandler.inScope)
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    private func get(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        let result = try database.run { try $0.executeAsCaller(ClustersV1Handler.detail, caller, [String(id)]) }
        guard let cluster = ClusterRow(result, row: 0, column: 0) else { throw HTTPError(404, "Cluster not found") }
        let used = cluster.total - cluster.available
        var response = Response.json { json in
            json.beginObject()
            cluster.writeMembers(to: &json)
            json.key("organization_id")
            json.value(result.int(0, 8))
            json.key("created_at")
            json.value(result.string(0, 9) ?? "")
            json.key("running_count")
            json.value(result.int(0, 10) ?? 0)
            json.key("pending_count")
            json.value(result.int(0, 11) ?? 0)
            json.key("utilization")
            json.beginObject()
            for (name, used, total) in [
                ("ram", used.ram, cluster.total.ram), ("cpu", used.cpu, cluster.total.cpu),
                ("gpu", used.gpu, cluster.total.gpu),
            ] {
                json.key(name)
                json.rawNumber(fraction(used, of: total))
            }
            json.endObject()
            json.endObject()
        }
        response.userID = caller.id
        return response
    }

    /// The snapshot page after `cursor`. A cluster without a snapshot (never published, or lost by Redis) gets one
    /// rebuilt from PostgreSQL first; with Redis down the answer is `503`: the queue view is the snapshot, and the
    /// deployments themselves still answer from PostgreSQL.
    private func queuePage(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        let (limit, cursor) = try pageQuery(request)
        let found = try database.run { try $0.executeAsCaller(ClustersV1Handler.visible, caller, [String(id)]) }
        guard found.int(0, 0) != nil else { throw HTTPError(404, "Cluster not found") }
        let page: DeploymentQueue.Page
        do {
            if let read = try queue.page(id, after: cursor, limit: limit) {
                page = read
            } else {
                try queue.rebuild(id, from: database)
                guard let rebuilt = try queue.page(id, after: cursor, limit: limit) else {
                    throw ServiceUnavailable(dependency: "the queue snapshot")
                }
                page = rebuilt
            }
        } catch is RedisError {
            throw ServiceUnavailable(dependency: "Redis")
        }
        var response = Response.json { json in
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
        response.userID = caller.id
        return response
    }

    /// A dry run of a create from the request and priority of a deployment body (`name`, `image_path` and
    /// `cluster_id` may be there and are ignored): would it run, whom would it preempt, or where and why would it wait.
    private func whatIf(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        var input = try Input(request)
        let ram = input.number("ram_required", JSONNumber.nonNegativeInt64)
        let cpu = input.decimal("cpu_required", JSONNumber.millicores)
        let gpu = input.number("gpu_required", JSONNumber.nonNegativeInt64)
        let priority = input.number("priority", JSONNumber.int32)
        try input.validate()
        guard let ram, let cpu, let gpu, let priority else { throw ValidationFailure(input.issues) }
        let outcome = try scheduler.whatIf(
            Resources(ram: ram, cpu: cpu, gpu: gpu), priority: priority, in: id, by: caller)
        var response = Response.json { json in
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
        response.userID = caller.id
        return response
    }

    /// `limit` (1…1,000) and `cursor` (a `next_cursor` from an earlier page) from the query string.
    private func pageQuery(_ request: Request) throws(ValidationFailure) -> (Int, DeploymentQueue.Cursor?) {
        var issues: [ValidationFailure.Issue] = []
        var limit = ClustersV1Handler.defaultLimit
        if let text = request.query["limit"] {
            if text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int(text),
                (1...ClustersV1Handler.maximumLimit).contains(value)
            {
                limit = value
            } else {
                issues.append(
                    .init(
                        location: [.key("query"), .key("limit")],
                        message: "Input should be an integer from 1 to \(ClustersV1Handler.maximumLimit)",
                        type: "int_parsing"))
            }
        }
        var cursor: DeploymentQueue.Cursor?
        if let text = request.query["cursor"] {
            cursor = DeploymentQueue.Cursor(text)
            if cursor == nil {
                issues.append(
                    .init(
                        location: [.key("query"), .key("cursor")],
                        message: "Value error, not a cursor this endpoint returned", type: "value_error"))
            }
        }
        guard issues.isEmpty else { throw ValidationFailure(issues) }
        return (limit, cursor)
    }
}

/// `used / total` as a JSON number with four decimals (0 for an empty dimension).
private func fraction(_ used: Int64, of total: Int64) -> String {
    guard total > 0 else { return "0.0" }
    return JSONNumber.text(Int64((Double(used) / Double(total) * 10_000).rounded()), decimals: 4)
}
