import Testing

@testable import HVFastCGI

@Suite struct RouterTests {
    private let router = Router([
        Route("GET", "/clusters/get_cluster") { _ in .detail(200, "get") },
        Route("POST", "/clusters/create") { _ in .detail(200, "create") },
        Route("GET", "/v1/clusters/{id}") { request in .detail(200, "one \(request.pathParameters["id"] ?? "")") },
        Route("DELETE", "/v1/clusters/{id}") { _ in .detail(200, "delete") },
        Route("GET", "/v1/clusters/{id}/queue") { request in .detail(200, "queue \(request.pathParameters["id"]!)") },
        Route("GET", "/") { _ in .detail(200, "root") },
    ])

    private func body(_ method: String, _ path: String) -> String? {
        guard case .found(let handler, let parameters, _) = router.match(method: method, path: path) else { return nil }
        var request = Request(method: method, target: path)
        request.pathParameters = parameters
        return String(decoding: try! handler(request).body, as: UTF8.self)
    }

    @Test func bothSlashFormsMatch() {
        #expect(body("GET", "/clusters/get_cluster") == #"{"detail":"get"}"#)
        #expect(body("GET", "/clusters/get_cluster/") == #"{"detail":"get"}"#)
        #expect(body("GET", "/v1/clusters/7/") == #"{"detail":"one 7"}"#)
        #expect(body("GET", "/") == #"{"detail":"root"}"#)
    }

    @Test func pathParametersAreExtracted() {
        #expect(body("GET", "/v1/clusters/42/queue") == #"{"detail":"queue 42"}"#)
    }

    @Test func aMatchNamesItsRouteByIndex() {
        for (method, path, index) in [
            ("POST", "/clusters/create/", 1), ("GET", "/v1/clusters/9", 2), ("DELETE", "/v1/clusters/9", 3),
            ("GET", "/", 5),
        ] {
            guard case .found(_, _, let route) = router.match(method: method, path: path) else {
                Issue.record("\(method) \(path) did not match")
                continue
            }
            #expect(route == index, "\(method) \(path)")
        }
        #expect(Application(router: router).respond(to: Request(method: "GET", target: "/nope")).route == nil)
    }

    @Test func unknownPathIs404() {
        guard case .notFound = router.match(method: "GET", path: "/clusters") else {
            Issue.record("expected notFound")
            return
        }
        guard case .notFound = router.match(method: "GET", path: "/v1/clusters/1/queue/extra") else {
            Issue.record("expected notFound")
            return
        }
    }

    @Test func knownPathWithWrongMethodIs405WithAllow() {
        guard case .methodNotAllowed(let allowed) = router.match(method: "POST", path: "/clusters/get_cluster/") else {
            Issue.record("expected methodNotAllowed")
            return
        }
        #expect(allowed == ["GET", "HEAD"])
        guard case .methodNotAllowed(let methods) = router.match(method: "PUT", path: "/v1/clusters/3") else {
            Issue.record("expected methodNotAllowed")
            return
        }
        #expect(methods == ["DELETE", "GET", "HEAD"])
        guard case .methodNotAllowed(let postOnly) = router.match(method: "HEAD", path: "/clusters/create") else {
            Issue.record("expected methodNotAllowed")
            return
        }
        #expect(postOnly == ["POST"])
    }

    @Test func headRunsTheGetHandlerWhereThereIsOne() {
        #expect(body("HEAD", "/clusters/get_cluster/") == #"{"detail":"get"}"#)
        #expect(body("HEAD", "/v1/clusters/5") == #"{"detail":"one 5"}"#)
        #expect(body("HEAD", "/") == #"{"detail":"root"}"#)
        guard case .found(_, _, let route) = router.match(method: "HEAD", path: "/v1/clusters/5/queue") else {
            Issue.record("HEAD did not match")
            return
        }
        #expect(route == 4)
    }

    @Test func applicationAnswersInFastAPIShape() {
        let application = Application(router: router)
        let missing = application.respond(to: Request(method: "GET", target: "/nope")).response
        #expect(missing.status == 404)
        #expect(String(decoding: missing.body, as: UTF8.self) == #"{"detail":"Not Found"}"#)
        let wrong = application.respond(to: Request(method: "PATCH", target: "/")).response
        #expect(wrong.status == 405)
        #expect(String(decoding: wrong.body, as: UTF8.self) == #"{"detail":"Method Not Allowed"}"#)
    }

    @Test func unexpectedErrorsBecomeGeneric500() {
        struct Boom: Error {}
        let application = Application(router: Router([Route("GET", "/boom") { _ in throw Boom() }]))
        let (response, failure, route) = application.respond(to: Request(method: "GET", target: "/boom"))
        #expect(route == 0)
        #expect(response.status == 500)
        #expect(String(decoding: response.body, as: UTF8.self) == #"{"detail":"Internal Server Error"}"#)
        #expect(failure is Boom)
    }
}
