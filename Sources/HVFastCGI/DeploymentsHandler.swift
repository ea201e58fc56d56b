import Domain

/// `POST /deployments/create/`, `GET /deployments/get_deployment/` and `POST /deployments/complete/`.
struct DeploymentsHandler {
    let database: Database
    let authenticator: Authenticator
    let scheduler: ClusterScheduler

    var routes: [Route] {
        [
            Route(DeploymentsHandler.createRoute.method, DeploymentsHandler.createRoute.pattern, create),
            Route("GET", "/deployments/get_deployment", get),
            Route("POST", "/deployments/complete", complete),
        ]
    }

    /// The seed create, which `createTogether` also answers.
    static let createRoute = (method: "POST", pattern: "/deployments/create")

    static let byID = read(where: "id")
    static let byName = read(where: "name")

    /// The caller (no row: unknown user or revoked token) and the deployment whose `column` is `$3` in their scope.
    private static func read(where column: String) -> Statement {
        Statement(
            name: "deployments_by_\(column)",
            sql: """
                SELECT d.id, d.name, d.cluster_id, d.image_path, d.ram_required, d.cpu_required, d.gpu_required,
                       d.status, d.priority
                FROM users u LEFT JOIN deployments d ON d.\(column) = $3 AND \(sqlInScope("d"))
                WHERE u.id = $1 AND u.tokens_valid_after <= $2
                """)
    }

    private func create(_ request: Request) throws -> Response {
        let (caller, clusterID, new) = try parsedCreate(request)
        let row: DeploymentRow
        do {
            row = try scheduler.create(new, in: clusterID, by: caller)
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            throw HTTPError(409, "Deployment with the given name already exists")
        }
        return respond(row, caller)
    }

    /// The caller, the cluster and the deployment a create asks for.
    ///
    /// - Throws: `HTTPError` 401 or a `ValidationFailure` for the client.
    private func parsedCreate(_ request: Request) throws -> (Caller, Int64, ClusterScheduler.NewDeployment) {
        let caller = try authenticator.caller(request, now: unixTime())
        var input = try Input(request)
        let name = input.string("name", Validation.name)
        let clusterID = input.number("cluster_id", JSONNumber.identifier)
        let image = input.string("image_path", Validation.imageReference)
        let demand = input.deploymentRequest()
        try input.validate()
        guard let name, let clusterID, let image, let demand else { throw ValidationFailure(input.issues) }
        let new = ClusterScheduler.NewDeployment(
            name: name, imagePath: image, request: demand.request, priority: demand.priority)
        return (caller, clusterID, new)
    }

    /// The cluster of a valid create, when this worker currently takes the creates into it together.
    func clusterTakingCreatesTogether(_ request: Request) -> Int64? {
        guard let (_, clusterID, _) = try? parsedCreate(request) else { return nil }
        return scheduler.hints.takesBatch(into: clusterID) ? clusterID : nil
    }

    /// Answers the valid creates into `cluster` among `requests` (nil: not a create) in one transaction
    /// (`ClusterScheduler.createTogether`); nil for each request to be answered alone (another cluster, invalid
    /// input, a create the transaction did not make), and for all when fewer than two could go together.
    func createTogether(_ requests: [Request?], into cluster: Int64) -> [Response?] {
        let parsed = requests.map { request in
            request.flatMap { try? parsedCreate($0) }.flatMap { $0.1 == cluster ? $0 : nil }
        }
        let creates = parsed.compactMap { $0 }
        scheduler.hints.noteBatch(creates: creates.count, into: cluster)
        guard creates.count >= 2 else { return requests.map { _ in nil } }
        let rows: [DeploymentRow?]
        do {
            rows = try scheduler.createTogether(creates.map { (new: $0.2, caller: $0.0) }, in: cluster)
        } catch let error as any ClientError {
            return parsed.map { $0 == nil ? nil : error.response }
        } catch {
            return requests.map { _ in nil }
        }
        var made = rows.makeIterator()
        return parsed.map { create in
            guard let create, let row = made.next() ?? nil else { return nil }
            return respond(row, create.0)
        }
    }

    private func get(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        return respond(try find(request, caller), caller)
    }

    private func complete(_ request: Request) throws -> Response {
        let caller = try authenticator.caller(request, now: unixTime())
        let lookup = try Lookup(request, nameField: "deployment_name", noun: "deployment")
        // The scheduler checks the caller and the scope of an id itself (401, 404): a name needs resolving first.
        let id: Int64
        if case .id(let given) = lookup { id = given } else { id = try find(lookup, caller).id }
        return respond(try scheduler.complete(id, by: caller), caller)
    }

    /// The deployment the request names, in the caller's scope.
    private func find(_ request: Request, _ caller: Caller) throws -> DeploymentRow {
        try find(try Lookup(request, nameField: "deployment_name", noun: "deployment"), caller)
    }

    private func find(_ lookup: Lookup, _ caller: Caller) throws -> DeploymentRow {
        try lookup.find(
            "deployment", by: caller, byID: DeploymentsHandler.byID, byName: DeploymentsHandler.byName, in: database,
            decode: { DeploymentRow($0, row: 0) }, nameOf: \.name)
    }

    private func respond(_ row: DeploymentRow, _ caller: Caller) -> Response {
        return .json(for: caller.id) { row.write(to: &$0) }
    }
}
