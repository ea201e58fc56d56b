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

    /// The seed create, which `answer(_:with:)` also answers.
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

    /// A create's caller, cluster and deployment, validated.
    struct ValidCreate {
        let caller: Caller
        let cluster: Int64
        let new: ClusterScheduler.NewDeployment
    }

    private func create(_ request: Request) throws -> Response {
        try make(validCreate(request))
    }

    /// Makes `create` alone.
    private func make(_ create: ValidCreate) throws -> Response {
        let row: DeploymentRow
        do {
            row = try scheduler.create(create.new, in: create.cluster, by: create.caller)
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            throw HTTPError(409, "Deployment with the given name already exists")
        }
        return respond(row, create.caller)
    }

    /// - Throws: `HTTPError` 401 or a `ValidationFailure` for the client.
    func validCreate(_ request: Request) throws -> ValidCreate {
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
        return ValidCreate(caller: caller, cluster: clusterID, new: new)
    }

    /// Whether this worker currently takes along the creates waiting behind one into `cluster`.
    func takesCreatesAlong(into cluster: Int64) -> Bool { scheduler.hints.takesBatch(into: cluster) }

    /// Answers `first` and the valid creates into its cluster among `others` (nil: not a create), each parsed once:
    /// together in one transaction when there are two or more (`ClusterScheduler.createTogether`), and alone those
    /// the transaction did not make. Nil for each of `others` to be answered by its route (another cluster, invalid
    /// input).
    func answer(_ first: ValidCreate, with others: [Request?]) -> [Result<Response, any Error>?] {
        let creates: [ValidCreate?] =
            [first]
            + others.map { request in
                request.flatMap { try? validCreate($0) }.flatMap { $0.cluster == first.cluster ? $0 : nil }
            }
        let together = creates.compactMap { $0 }
        if !others.isEmpty { scheduler.hints.noteBatch(creates: together.count, into: first.cluster) }
        var rows: [DeploymentRow?] = []
        if together.count >= 2 {
            do {
                rows = try scheduler.createTogether(together.map { ($0.new, $0.caller) }, in: first.cluster)
            } catch let error as any ClientError {
                return creates.map { $0.map { _ in .failure(error) } }
            } catch {
                // Each is made alone below.
            }
        }
        var made = rows.makeIterator()
        return creates.map { create in
            guard let create else { return nil }
            if let row = made.next() ?? nil { return .success(respond(row, create.caller)) }
            return Result { try make(create) }
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
