/// A handler answers one route. It throws `ClientError`s for the client and anything else for a `500`.
typealias Handler = (Request) throws -> Response

/// One endpoint: a method and a path pattern whose `{name}` segments are parameters.
struct Route {
    let method: String
    let pattern: String
    let handler: Handler

    init(_ method: String, _ pattern: String, _ handler: @escaping Handler) {
        self.method = method
        self.pattern = pattern
        self.handler = handler
    }
}

/// Finds the handler for a method and path. Every path answers with and without its trailing slash, and `HEAD`
/// wherever it answers `GET` (RFC 9110 requires both of a general-purpose server; health checks and `curl -I` send
/// it): the `GET` handler runs and nginx sends only the head of its answer.
struct Router {
    enum Match {
        /// `route` is the route's index in the list the router was built from.
        case found(Handler, parameters: [String: String], route: Int)
        case notFound
        case methodNotAllowed(allowed: [String])
    }

    /// A route's handler and its index.
    private typealias Target = (handler: Handler, route: Int)

    private struct Pattern {
        let segments: [Substring]
        var handlers: [String: Target]
    }

    /// Patterns without parameters, by normalized path: the common case is one dictionary lookup.
    private var exact: [String: [String: Target]] = [:]
    private var patterns: [Pattern] = []
    /// Every route's method and pattern, in the order given.
    private(set) var routes: [(method: String, pattern: String)] = []

    init(_ routes: [Route]) {
        for (index, route) in routes.enumerated() {
            self.routes.append((route.method, route.pattern))
            let target = (route.handler, index)
            let normalized = Router.normalize(route.pattern)
            if normalized.contains("{") {
                let segments = normalized.split(separator: "/")
                if let i = patterns.firstIndex(where: { $0.segments == segments }) {
                    patterns[i].handlers[route.method] = target
                } else {
                    patterns.append(Pattern(segments: segments, handlers: [route.method: target]))
                }
            } else {
                exact[normalized, default: [:]][route.method] = target
            }
        }
    }

    func match(method: String, path: String) -> Match {
        let normalized = Router.normalize(path)
        if let handlers = exact[normalized] {
            guard let target = Router.target(handlers, method) else {
                return .methodNotAllowed(allowed: Router.allowed(handlers))
            }
            return .found(target.handler, parameters: [:], route: target.route)
        }
        let segments = normalized.split(separator: "/")
        for pattern in patterns where pattern.segments.count == segments.count {
            var parameters: [String: String] = [:]
            var matches = true
            for (expected, actual) in zip(pattern.segments, segments) {
                if expected.first == "{" && expected.last == "}" {
                    parameters[String(expected.dropFirst().dropLast())] = String(actual)
                } else if expected != actual {
                    matches = false
                    break
                }
            }
            guard matches else { continue }
            guard let target = Router.target(pattern.handlers, method) else {
                return .methodNotAllowed(allowed: Router.allowed(pattern.handlers))
            }
            return .found(target.handler, parameters: parameters, route: target.route)
        }
        return .notFound
    }

    private static func target(_ handlers: [String: Target], _ method: String) -> Target? {
        handlers[method] ?? (method == "HEAD" ? handlers["GET"] : nil)
    }

    private static func allowed(_ handlers: [String: Target]) -> [String] {
        (handlers["GET"] == nil ? Array(handlers.keys) : Array(handlers.keys) + ["HEAD"]).sorted()
    }

    /// Strips one trailing slash (but keeps `/`).
    static func normalize(_ path: String) -> String {
        path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }
}
