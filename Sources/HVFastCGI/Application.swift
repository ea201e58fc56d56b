/// Turns a request into a response: routing and error mapping, shared by the workers and in-process tests.
struct Application {
    let router: Router
    /// Answers creates into one cluster together (`respondTogether`); nil where only routing is tested.
    var deployments: DeploymentsHandler? = nil

    /// The cluster `request` creates a deployment in, when it is a seed create whose cluster this worker currently
    /// takes creates together into (`respondTogether`); nil otherwise.
    func clusterTakingCreatesTogether(_ request: Request) -> Int64? {
        guard let deployments, request.method == DeploymentsHandler.createRoute.method,
            case .found(_, _, let route) = router.match(method: request.method, path: request.path),
            router.routes[route] == DeploymentsHandler.createRoute
        else { return nil }
        return deployments.clusterTakingCreatesTogether(request)
    }

    /// Answers together the seed creates among `requests` (nil: one that is not to be answered here) into `cluster`;
    /// nil for each request to be answered alone by `respond`, and for all when fewer than two could go together.
    func respondTogether(_ requests: [Request?], into cluster: Int64) -> [(response: Response, route: Int)?] {
        let creates = requests.map { request -> Request? in
            guard let request, case .found(_, _, let route) = router.match(method: request.method, path: request.path),
                router.routes[route] == DeploymentsHandler.createRoute
            else { return nil }
            return request
        }
        guard let deployments, let route = router.routes.firstIndex(where: { $0 == DeploymentsHandler.createRoute })
        else { return requests.map { _ in nil } }
        return deployments.createTogether(creates, into: cluster).map { $0.map { ($0, route) } }
    }

    /// The response, for a `500` the underlying error for the log (never sent to the client), and the index of the
    /// route that answered (nil when none matched), which `routed` also gets before the handler runs.
    func respond(to request: Request, routed: (Int) -> Void = { _ in }) -> (
        response: Response, failure: (any Error)?, route: Int?
    ) {
        switch router.match(method: request.method, path: request.path) {
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
            } catch let error as any ClientError {
                return (error.response, nil, route)
            } catch {
                return (.detail(500, "Internal Server Error"), error, route)
            }
        }
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
