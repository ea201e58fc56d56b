/// Turns a request into a response: routing and error mapping, shared by the workers and in-process tests.
struct Application {
    /// A response, for a `500` the underlying error for the log (never sent to the client), and the index of the
    /// route that answered (nil when none matched).
    typealias Answer = (response: Response, failure: (any Error)?, route: Int?)

    let router: Router
    /// Answers the changes a worker takes together (`answer(_:)`); nil where only routing is tested.
    let deployments: DeploymentsHandler?
    /// The indexes of the seed create's and completion's routes, whose requests `answer(_:)` answers.
    private let changeRoutes: (create: Int?, complete: Int?)

    init(router: Router, deployments: DeploymentsHandler? = nil) {
        self.router = router
        self.deployments = deployments
        changeRoutes = (
            router.routes.firstIndex { $0 == DeploymentsHandler.createRoute },
            router.routes.firstIndex { $0 == DeploymentsHandler.completeRoute }
        )
    }

    /// The route `request` matches, found once per request for `change` and `respond`.
    func match(_ request: Request) -> Router.Match { router.match(method: request.method, path: request.path) }

    /// A change `answer(_:)` answers, parsed once, and its route's index; nil for any other request, and for one
    /// that is not valid (its route then answers it).
    typealias Change = (change: ClusterScheduler.Change, route: Int)

    func change(_ request: Request, _ match: Router.Match) -> Change? {
        guard let deployments, case .found(_, _, let route) = match else { return nil }
        switch route {
        case changeRoutes.create: return (try? deployments.validCreate(request)).map { ($0, route) }
        case changeRoutes.complete:
            return (try? deployments.validCompletion(request)).flatMap { $0 }.map { ($0, route) }
        default: return nil
        }
    }

    /// Answers `changes` with `DeploymentsHandler.answer(_:)` (nil: one to be answered by `respond`).
    func answer(_ changes: [Change?]) -> [Answer?] {
        guard let deployments else { return changes.map { _ in nil } }
        return zip(changes, deployments.answer(changes.map { $0?.change })).map { change, result in
            guard let change, let result else { return nil }
            return switch result {
            case .success(let response): (response, nil, change.route)
            case .failure(let error): Application.answer(to: error, route: change.route)
            }
        }
    }

    /// The response, for a `500` the underlying error for the log (never sent to the client), and the index of the
    /// route that answered (nil when none matched), which `routed` also gets before the handler runs.
    func respond(to request: Request, routed: (Int) -> Void = { _ in }) -> Answer {
        respond(to: request, match(request), routed: routed)
    }

    /// `respond(to:routed:)` for a request whose route `match` has already found.
    func respond(to request: Request, _ match: Router.Match, routed: (Int) -> Void = { _ in }) -> Answer {
        switch match {
        case .notFound:
            return (HTTPError.notFound.response, nil, nil)
        case .methodNotAllowed(let allowed):
            return (
                .detail(405, "Method Not Allowed", headers: [("Allow", allowed.joined(separator: ", "))]), nil, nil
            )
        case .found(let handler, let parameters, let route):
            routed(route)
            var request = request
            request.pathParameters = parameters
            do {
                return (try handler(request), nil, route)
            } catch {
                return Application.answer(to: error, route: route)
            }
        }
    }

    /// A handler's error as the client sees it, and for a `500` the error itself for the log.
    private static func answer(to error: any Error, route: Int?) -> Answer {
        if let error = error as? any ClientError { return (error.response, nil, route) }
        return (.detail(500, "Internal Server Error"), error, route)
    }
}

/// What the system endpoints need to know about the dependencies.
protocol HealthProbe {
    /// The schema version PostgreSQL reports. - Throws: when PostgreSQL cannot be reached.
    func schemaVersion() throws -> Int
    func redisIsUp() -> Bool
}

/// `GET /`, `/healthz` and `/readyz`.
struct SystemHandler {
    let probe: any HealthProbe

    var routes: [Route] {
        [
            Route("GET", "/") { _ in message("Hypervisor is running") },
            Route("GET", "/healthz") { _ in status("ok") },
            Route("GET", "/readyz", readiness),
        ]
    }

    /// 200 when PostgreSQL answers and is fully migrated; Redis is reported but never makes it fail.
    private func readiness(_ request: Request) -> Response {
        let version = try? probe.schemaVersion()
        let redis = probe.redisIsUp() ? "up" : "down"
        let migrated = version == Migrations.latestVersion
        return .json(migrated ? 200 : 503) { json in
            json.beginObject()
            if !migrated {
                json.key("detail")
                json.value(version == nil ? "PostgreSQL is not reachable" : "database schema is not up to date")
            }
            json.key("status")
            json.value(migrated ? "ready" : "not ready")
            json.key("postgres")
            json.value(version == nil ? "down" : "up")
            json.key("schema_version")
            json.value(version.map(Int64.init))
            json.key("redis")
            json.value(redis)
            json.endObject()
        }
    }
}

private func message(_ text: String) -> Response {
    .json { json in
        json.beginObject()
        json.key("message")
        json.value(text)
        json.endObject()
    }
}

private func status(_ text: String) -> Response {
    .json { json in
        json.beginObject()
        json.key("status")
        json.value(text)
        json.endObject()
    }
}
