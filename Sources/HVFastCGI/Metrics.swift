/// `GET /metrics`: the scoreboard in Prometheus' text format (version 0.0.4), for callers on the loopback interface
/// only (a local Prometheus agent, `hvctl status`); anyone else gets the `404` of a path that does not exist.
struct MetricsHandler {
    let scoreboard: Scoreboard
    /// Each route's label (`"POST /deployments/create"`), by its index in the router; this route's own is last.
    let labels: [String]

    static let pattern = "/metrics"

    /// - Parameter routes: every other route, in the order the router gets them, this one following.
    init(scoreboard: Scoreboard, routes: [Route]) {
        precondition(routes.count + 1 <= Scoreboard.unmatchedRoute, "raise Scoreboard.routeCapacity")
        self.scoreboard = scoreboard
        labels = routes.map { "\($0.method) \(Router.normalize($0.pattern))" } + ["GET \(MetricsHandler.pattern)"]
    }

    var route: Route { Route("GET", MetricsHandler.pattern, render) }

    private func render(_ request: Request) throws -> Response {
        guard isLoopback(request.remoteAddress) else { throw HTTPError.notFound }
        var text = ""
        text += "# HELP hv_requests_total Requests answered, by route and status class.\n"
        text += "# TYPE hv_requests_total counter\n"
        let names = labels + ["other"]  // `other`: no route matched (404, 405, and 413 before routing)
        let totals = names.indices.map { scoreboard.totals(route: $0 < labels.count ? $0 : Scoreboard.unmatchedRoute) }
        for (name, total) in zip(names, totals) {
            for (index, count) in total.byStatusClass.enumerated() {
                text += "hv_requests_total{route=\"\(escaped(name))\",code=\"\(index + 2)xx\"} \(count)\n"
            }
        }
        text += "# HELP hv_request_duration_seconds From accepting a request to having written its response.\n"
        text += "# TYPE hv_request_duration_seconds histogram\n"
        for (name, total) in zip(names, totals) {
            let label = "route=\"\(escaped(name))\""
            var cumulative: Int64 = 0
            for (index, count) in total.byBucket.enumerated() {
                cumulative += count
                let bound = index < Scoreboard.bucketBounds.count ? "\(Scoreboard.bucketBounds[index])" : "+Inf"
                text += "hv_request_duration_seconds_bucket{\(label),le=\"\(bound)\"} \(cumulative)\n"
            }
            text += "hv_request_duration_seconds_sum{\(label)} \(total.seconds)\n"
            text += "hv_request_duration_seconds_count{\(label)} \(cumulative)\n"
        }
        let workers = scoreboard.workers()
        let now = monotonicSeconds()
        let busy = workers.filter { $0.busySince != nil }.count
        text += "# HELP hv_workers Live worker processes, busy in a request or idle.\n"
        text += "# TYPE hv_workers gauge\n"
        text += "hv_workers{state=\"busy\"} \(busy)\nhv_workers{state=\"idle\"} \(workers.count - busy)\n"
        text += "# HELP hv_worker_requests Requests served by each live worker since it started.\n"
        text += "# TYPE hv_worker_requests gauge\n"
        for worker in workers { text += "hv_worker_requests{pid=\"\(worker.pid)\"} \(worker.served)\n" }
        text += "# HELP hv_worker_busy_seconds How long each busy worker has been in its request, by its route.\n"
        text += "# TYPE hv_worker_busy_seconds gauge\n"
        for worker in workers {
            guard let since = worker.busySince else { continue }
            let route = escaped(worker.route.map { $0 < labels.count ? labels[$0] : "other" } ?? "other")
            text += "hv_worker_busy_seconds{pid=\"\(worker.pid)\",route=\"\(route)\"} \(max(0, now - since))\n"
        }
        return Response(status: 200, body: Array(text.utf8), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }
}

/// An IPv4 address in 127.0.0.0/8 or the IPv6 loopback (also IPv4-mapped), as nginx writes `$remote_addr`.
func isLoopback(_ address: String) -> Bool {
    let v4 = address.hasPrefix("::ffff:") ? String(address.dropFirst(7)) : address
    return address == "::1" || v4.hasPrefix("127.")
}

/// A Prometheus label value: backslash, double quote and newline escaped.
private func escaped(_ value: String) -> String {
    var result = ""
    for character in value {
        switch character {
        case "\\": result += "\\\\"
        case "\"": result += "\\\""
        case "\n": result += "\\n"
        default: result.append(character)
        }
    }
    return result
}

/// Samples read back from Prometheus' text format as `MetricsHandler` writes it (for `hvctl status`).
enum PrometheusText {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// Every sample line of `text`; comments and lines that do not parse are skipped.
    static func samples(_ text: String) -> [Sample] {
        text.split(separator: "\n").compactMap { line -> Sample? in
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "),
                let value = Double(line[line.index(after: space)...])
            else { return nil }
            let series = line[..<space]
            guard let open = series.firstIndex(of: "{") else {
                return Sample(name: String(series), labels: [:], value: value)
            }
            var labels: [String: String] = [:]
            var rest = series[series.index(after: open)...].dropLast()  // without the closing brace
            while let equals = rest.firstIndex(of: "=") {
                let name = String(rest[..<equals])
                var cursor = rest.index(after: equals)
                guard cursor < rest.endIndex, rest[cursor] == "\"" else { return nil }
                cursor = rest.index(after: cursor)
                var text = ""
                while cursor < rest.endIndex, rest[cursor] != "\"" {
                    if rest[cursor] == "\\", rest.index(after: cursor) < rest.endIndex {
                        cursor = rest.index(after: cursor)
                        text.append(rest[cursor] == "n" ? "\n" : rest[cursor])
                    } else {
                        text.append(rest[cursor])
                    }
                    cursor = rest.index(after: cursor)
                }
                guard cursor < rest.endIndex else { return nil }
                labels[name] = text
                rest = rest[rest.index(after: cursor)...].drop { $0 == "," }
            }
            return Sample(name: String(series[..<open]), labels: labels, value: value)
        }
    }
}

extension [PrometheusText.Sample] {
    /// The value of the sample named `name` with exactly `labels`, or 0.
    func value(_ name: String, _ labels: [String: String]) -> Double {
        first { $0.name == name && $0.labels == labels }?.value ?? 0
    }
}
