import Domain

/// The v1 deployment resources: `GET /v1/deployments/{id}` (the seed object with its timestamps, preemptions, queue
/// position and why it waits), `GET /v1/deployments/{id}/events` (its history) and
/// `POST /v1/deployments/{id}/cancel`.
///
/// Each answer is one statement, so it is one consistent snapshot: every change to a cluster is one transaction, and
/// a pending deployment's position and reason are those of a settled cluster.
struct DeploymentsV1Handler {
    let database: Database
    let authenticator: Authenticator
    let scheduler: ClusterScheduler

    var routes: [Route] {
        [
            Route("GET", "/v1/deployments/{id}", get),
            Route("GET", "/v1/deployments/{id}/events", events),
            Route("POST", "/v1/deployments/{id}/cancel", cancel),
        ]
    }

    /// The caller (no row: unknown user or revoked token) and the deployment `$3` in their scope, with, when it is
    /// pending, its 1-based place among its cluster's pending deployments in scheduling order (two counts along
    /// `deployments_pending_order`) and what the deployments ahead of it leave free: the capacity minus the running
    /// requests of its priority or higher (`Scheduler.pendingReason`; along `deployments_running`).
    private static let detail = Statement(
        name: "v1_deployment",
        sql: """
            SELECT d.id, d.name, d.cluster_id, d.image_path, d.ram_required, d.cpu_required, d.gpu_required,
                   d.status, d.priority, \(sqlUTC("d.created_at")), \(sqlUTC("d.started_at")), \(sqlUTC("d.finished_at")),
                   d.preemptions, free.ram, free.cpu, free.gpu, queue.position
            FROM users u
            LEFT JOIN deployments d ON d.id = $3 AND \(ClusterScheduler.deploymentInScope)
            LEFT JOIN LATERAL (
                SELECT c.total_ram - coalesce(sum(r.ram_required), 0) AS ram,
                       c.total_cpu - coalesce(sum(r.cpu_required), 0) AS cpu,
                       c.total_gpu - coalesce(sum(r.gpu_required), 0) AS gpu
                FROM clusters c
                LEFT JOIN deployments r ON r.cluster_id = c.id AND r.status = 'Running' AND r.priority >= d.priority
                WHERE c.id = d.cluster_id AND d.status = 'Pending'
                GROUP BY c.id
            ) free ON true
            LEFT JOIN LATERAL (
                SELECT 1 + (SELECT count(*) FROM deployments p
                            WHERE p.cluster_id = d.cluster_id AND p.status = 'Pending' AND p.priority > d.priority)
                         + (SELECT count(*) FROM deployments p
                            WHERE p.cluster_id = d.cluster_id AND p.status = 'Pending' AND p.priority = d.priority
                              AND p.seq < d.seq) AS position
                WHERE d.status = 'Pending'
            ) queue ON true
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    /// The caller, whether the deployment `$3` is in their scope (`d.id`, NULL otherwise), and its events oldest
    /// first (one row of NULL event columns when it has none).
    private static let history = Statement(
        name: "v1_deployment_events",
        sql: """
            SELECT d.id, e.kind, \(sqlUTC("e.at")), e.caused_by
            FROM users u
            LEFT JOIN deployments d ON d.id = $3 AND \(ClusterScheduler.deploymentInScope)
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

    private func detail(_ id: Int64, _ caller: Caller) throws -> Response {
        let result = try database.run { try $0.executeAsCaller(DeploymentsV1Handler.detail, caller, [String(id)]) }
        guard let row = DeploymentRow(result, row: 0) else { throw HTTPError(404, "Deployment not found") }
        let reason = result.resources(13).flatMap { Scheduler.pendingReason(request: row.request, free: $0) }
        var response = Response.json { json in
            json.beginObject()
            row.writeMembers(to: &json)
            json.key("created_at")
            json.value(result.string(0, 9) ?? "")
            json.key("started_at")
            json.value(result.string(0, 10))
            json.key("finished_at")
            json.value(result.string(0, 11))
            json.key("preemptions")
            json.value(result.int(0, 12) ?? 0)
            json.key("queue_position")
            json.value(result.int(0, 16))
            json.key("pending_reason")
            json.value(reason)
            json.endObject()
        }
        response.userID = caller.id
        return response
    }

    private func events(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let id = try pathID(request)
        let result = try database.run {
            try $0.execute(DeploymentsV1Handler.history, [String(caller.id), String(caller.issuedAt), String(id)])
        }
        guard result.rowCount > 0 else { throw HTTPError.unauthorized }
        guard result.int(0, 0) != nil else { throw HTTPError(404, "Deployment not found") }
        var response = Response.json { json in
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
                json.value(result.string(row, 2) ?? "")
                json.key("caused_by")
                json.value(result.int(row, 3))
                json.endObject()
            }
            json.endArray()
            json.endObject()
        }
        response.userID = caller.id
        return response
    }
}
