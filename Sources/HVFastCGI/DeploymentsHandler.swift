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
            Route(DeploymentsHandler.completeRoute.method, DeploymentsHandler.completeRoute.pattern, complete),
        ]
    }

    /// The seed create and completion, which `answer(_:)` also answers.
    static let createRoute = (method: "POST", pattern: "/deployments/create")
    static let completeRoute = (method: "POST", pattern: "/deployments/complete")

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
        try answer([validCreate(request)])[0]!.get()
    }

    /// - Throws: `HTTPError` 401 or a `ValidationFailure` for the client.
    func validCreate(_ request: Request) throws -> ClusterScheduler.Change {
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
        return .create(new, in: clusterID, by: caller)
    }

    /// A completion by id, its caller authenticated; nil for one by name, which its route resolves first.
    ///
    /// - Throws: `HTTPError` 401/400 or a `ValidationFailure` for the client.
    func validCompletion(_ request: Request) throws -> ClusterScheduler.Change? {
        let caller = try authenticator.caller(request, now: unixTime())
        guard case .id(let id) = try Lookup(request, nameField: "deployment_name", noun: "deployment") else {
            return nil
        }
        return .complete(id, by: caller)
    }

    /// Answers `changes` (nil: a request to be answered by its route), each made as if it came alone after the ones
    /// before it, and those that can together in one round trip (`ClusterScheduler.make`).
    func answer(_ changes: [ClusterScheduler.Change?]) -> [Result<Response, any Error>?] {
        let valid = changes.compactMap { $0 }
        let made: [Result<DeploymentRow, any Error>]
        do {
            made = try scheduler.make(valid)
        } catch {
            return changes.map { $0.map { _ in .failure(error) } }
        }
        var results = zip(valid, made).makeIterator()
        return changes.map { change in
            guard change != nil, let (change, result) = results.next() else { return nil }
            return result.map { respond($0, change.caller) }.mapError { error in
                if let error = error as? PostgresError, error.sqlState == .uniqueViolation {
                    return HTTPError(409, "Deployment with the given name already exists")
                }
                return error
            }
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
        return try answer([.complete(id, by: caller)])[0]!.get()
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
