import Domain

/// `POST /deployments/create/`, `GET /deployments/get_deployment/` and `POST /deployments/complete/`.
struct DeploymentsHandler {
    let database: Database
    let authenticator: Authenticator
    let scheduler: ClusterScheduler

    var routes: [Route] {
        [
            Route("POST", "/deployments/create", create),
            Route("GET", "/deployments/get_deployment", get),
            Route("POST", "/deployments/complete", complete),
        ]
    }

    private static let byID = Statement(
        name: "deployments_by_id",
        sql: """
            SELECT d.id, d.name, d.cluster_id, d.image_path, d.ram_required, d.cpu_required, d.gpu_required, d.status,
                   d.priority
            FROM users u LEFT JOIN deployments d ON d.id = $3 AND
                (d.organization_id = u.organization_id OR
                 (u.organization_id IS NULL AND d.organization_id IS NULL AND d.owner_id = u.id))
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)
    private static let byName = Statement(
        name: "deployments_by_name",
        sql: """
            SELECT d.id, d.name, d.cluster_id, d.image_path, d.ram_required, d.cpu_required, d.gpu_required, d.status,
                   d.priority
            FROM users u LEFT JOIN deployments d ON d.name = $3 AND
                (d.organization_id = u.organization_id OR
                 (u.organization_id IS NULL AND d.organization_id IS NULL AND d.owner_id = u.id))
            WHERE u.id = $1 AND u.tokens_valid_after <= $2
            """)

    private func create(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        var input = try Input(request)
        let name = input.string("name", Validation.name)
        let clusterID = input.number("cluster_id", JSONNumber.identifier)
        let image = input.string("image_path", Validation.imageReference)
        let ram = input.number("ram_required", JSONNumber.nonNegativeInt64)
        let cpu = input.decimal("cpu_required", JSONNumber.millicores)
        let gpu = input.number("gpu_required", JSONNumber.nonNegativeInt64)
        let priority = input.number("priority", JSONNumber.int32)
        try input.validate()
        guard let name, let clusterID, let image, let ram, let cpu, let gpu, let priority else {
            throw HTTPError(422, "invalid input")
        }
        let new = ClusterScheduler.NewDeployment(
            name: name, imagePath: image, request: Resources(ram: ram, cpu: cpu, gpu: gpu), priority: priority)
        let row: DeploymentRow
        do {
            row = try scheduler.create(new, in: clusterID, by: caller)
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            throw HTTPError(409, "Deployment with the given name already exists")
        }
        return respond(row, caller)
    }

    private func get(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let lookup = try DeploymentsHandler.lookup(request)
        let row = try database.run { connection -> DeploymentRow in
            func fetch(_ statement: Statement, _ key: String) throws -> DeploymentRow? {
                let result = try connection.execute(statement, [String(caller.id), String(caller.issuedAt), key])
                guard result.rowCount == 1 else { throw HTTPError.unauthorized }
                return DeploymentRow(result, row: 0)
            }
            switch lookup {
            case .id(let id):
                guard let found = try fetch(DeploymentsHandler.byID, String(id)) else { throw HTTPError(404, "Deployment not found") }
                return found
            case .name(let name):
                guard let found = try fetch(DeploymentsHandler.byName, name) else { throw HTTPError(404, "Deployment not found") }
                return found
            case .both(let id, let name):
                let byID = try fetch(DeploymentsHandler.byID, String(id))
                if let byID, byID.name == name { return byID }
                if byID == nil, try fetch(DeploymentsHandler.byName, name) == nil {
                    throw HTTPError(404, "Deployment not found")
                }
                throw HTTPError(400, "id and deployment_name refer to different deployments")
            }
        }
        return respond(row, caller)
    }

    private func complete(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let row = try scheduler.complete(try DeploymentsHandler.lookup(request), by: caller)
        return respond(row, caller)
    }

    /// `id` and/or `deployment_name`, from the query string or the body.
    ///
    /// - Throws: `ValidationFailure` for malformed values, `HTTPError` 400 when neither is given.
    private static func lookup(_ request: Request) throws -> ClusterScheduler.Lookup {
        var input = try Input(request)
        let id = input.lookupID("id")
        let name = input.lookupString("deployment_name", Validation.name)
        try input.validate()
        switch (id, name) {
        case (let id?, let name?): return .both(id, name)
        case (let id?, nil): return .id(id)
        case (nil, let name?): return .name(name)
        case (nil, nil): throw HTTPError(400, "Provide the deployment's id or deployment_name")
        }
    }

    private func respond(_ row: DeploymentRow, _ caller: Caller) -> Response {
        var response = Response.json { row.write(to: &$0) }
        response.userID = caller.id
        return response
    }
}
