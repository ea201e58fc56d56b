import Testing

@testable import HVFastCGI

/// The scoreboard's request counters and `GET /metrics` rendering them.
@Suite struct MetricsTests {
    private let routes = [
        Route("GET", "/a") { _ in .detail(200, "a") },
        Route("POST", "/b/") { _ in .detail(200, "b") },
    ]

    /// Samples by series (`name{labels}`), from Prometheus' text format.
    private func samples(_ response: Response) -> [String: Double] {
        var result: [String: Double] = [:]
        for line in String(decoding: response.body, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                Issue.record("not a sample: \(line)")
                continue
            }
            result[String(line[..<space])] = value
        }
        return result
    }

    private func metrics(_ scoreboard: Scoreboard, from address: String = "127.0.0.1") -> Response {
        let application = Application(
            router: Router(routes + [MetricsHandler(scoreboard: scoreboard, routes: routes).route]))
        return application.respond(to: Request(method: "GET", target: "/metrics", remoteAddress: address)).response
    }

    @Test func countsByRouteStatusClassAndDurationBucketAndSumsOverSlots() throws {
        let scoreboard = try Scoreboard()
        let first = try #require(scoreboard.claim())
        let second = try #require(scoreboard.claim())
        scoreboard.assign(slot: first, pid: 101)
        scoreboard.assign(slot: second, pid: 102)
        scoreboard.markIdle(slot: first, route: 0, status: 200, seconds: 0.0004)
        scoreboard.markIdle(slot: first, route: 0, status: 404, seconds: 0.003)
        scoreboard.markIdle(slot: second, route: 0, status: 201, seconds: 0.02)
        scoreboard.markIdle(slot: second, route: 1, status: 503, seconds: 12)
        scoreboard.markIdle(slot: second, route: Scoreboard.unmatchedRoute, status: 405, seconds: 0.001)

        let a = scoreboard.totals(route: 0)
        #expect(a.byStatusClass == [2, 0, 1, 0])
        #expect(a.count == 3)
        #expect(a.byBucket[0] == 1)  // ≤ 1 ms
        #expect(a.byBucket[2] == 1)  // ≤ 5 ms
        #expect(a.byBucket[4] == 1)  // ≤ 25 ms
        #expect(abs(a.seconds - 0.0234) < 1e-6)
        let b = scoreboard.totals(route: 1)
        #expect(b.byStatusClass == [0, 0, 0, 1])
        #expect(b.byBucket.last == 1)  // over the last bound (10 s)
        #expect(scoreboard.totals(route: Scoreboard.unmatchedRoute).byStatusClass == [0, 0, 1, 0])
        #expect(scoreboard.workers().map(\.served) == [2, 3])
    }

    @Test func aRecycledSlotKeepsItsCountsSoTotalsNeverGoBackwards() throws {
        let scoreboard = try Scoreboard()
        let slot = try #require(scoreboard.claim())
        scoreboard.assign(slot: slot, pid: 201)
        scoreboard.markBusy(slot: slot, since: 5)
        #expect(scoreboard.busySince() == [201: 5])
        #expect(scoreboard.workers().first?.route == nil, "not routed yet")
        scoreboard.markRouted(slot: slot, route: 3)
        #expect(scoreboard.workers().first?.route == 3)
        scoreboard.markIdle(slot: slot, route: 0, status: 200, seconds: 0.01)
        #expect(scoreboard.busySince() == [:])
        #expect(scoreboard.workers().first?.route == nil)
        scoreboard.markBusy(slot: slot, since: 6)
        #expect(scoreboard.workers().first?.route == nil, "the previous request's route is not shown for the next one")
        scoreboard.markIdle(slot: slot, route: 0, status: 200, seconds: 0.01)
        scoreboard.release(slot: slot)
        #expect(scoreboard.workers() == [])

        #expect(scoreboard.claim() == slot)
        scoreboard.assign(slot: slot, pid: 202)
        scoreboard.markIdle(slot: slot, route: 0, status: 200, seconds: 0.01)
        #expect(scoreboard.totals(route: 0).count == 3, "two requests of the first worker, one of the second")
        #expect(scoreboard.workers() == [Scoreboard.WorkerState(pid: 202, busySince: nil, served: 1)])
    }

    @Test func metricsRenderCountersCumulativeHistogramsAndWorkers() throws {
        let scoreboard = try Scoreboard()
        let slot = try #require(scoreboard.claim())
        scoreboard.assign(slot: slot, pid: 301)
        scoreboard.markIdle(slot: slot, route: 1, status: 201, seconds: 0.002)
        scoreboard.markIdle(slot: slot, route: 1, status: 422, seconds: 0.3)
        scoreboard.markIdle(slot: slot, route: Scoreboard.unmatchedRoute, status: 404, seconds: 0.0001)
        scoreboard.markBusy(slot: slot, since: monotonicSeconds())
        scoreboard.markRouted(slot: slot, route: 1)

        let response = metrics(scoreboard)
        #expect(response.status == 200)
        #expect(response.contentType == "text/plain; version=0.0.4; charset=utf-8")
        let values = samples(response)
        #expect(values[#"hv_requests_total{route="POST /b",code="2xx"}"#] == 1)
        #expect(values[#"hv_requests_total{route="POST /b",code="4xx"}"#] == 1)
        #expect(values[#"hv_requests_total{route="GET /a",code="2xx"}"#] == 0)
        #expect(values[#"hv_requests_total{route="other",code="4xx"}"#] == 1)
        let bucket = { (le: String) in values[#"hv_request_duration_seconds_bucket{route="POST /b",le=""# + le + #""}"#]
        }
        #expect(bucket("0.001") == 0)
        #expect(bucket("0.0025") == 1)
        #expect(bucket("0.25") == 1)
        #expect(bucket("0.5") == 2)
        #expect(bucket("+Inf") == 2)
        #expect(values[#"hv_request_duration_seconds_count{route="POST /b"}"#] == 2)
        #expect(abs((values[#"hv_request_duration_seconds_sum{route="POST /b"}"#] ?? 0) - 0.302) < 1e-6)
        #expect(values[#"hv_requests_total{route="GET /metrics",code="2xx"}"#] == 0)
        #expect(values[#"hv_workers{state="busy"}"#] == 1)
        #expect(values[#"hv_workers{state="idle"}"#] == 0)
        #expect(values[#"hv_worker_requests{pid="301"}"#] == 3)
        #expect((values[#"hv_worker_busy_seconds{pid="301",route="POST /b"}"#] ?? -1) >= 0)
    }

    @Test func prometheusTextReadsSamplesAndUnescapesLabels() {
        let text = """
            # HELP x A help line.
            x 1
            y{a="q\\"uote",b="back\\\\slash",c="new\\nline"} 2.5
            z{route="GET /a",code="2xx"} 7
            not a sample
            """
        let samples = PrometheusText.samples(text)
        #expect(
            samples == [
                .init(name: "x", labels: [:], value: 1),
                .init(name: "y", labels: ["a": "q\"uote", "b": "back\\slash", "c": "new\nline"], value: 2.5),
                .init(name: "z", labels: ["route": "GET /a", "code": "2xx"], value: 7),
            ])
        #expect(samples.value("z", ["route": "GET /a", "code": "2xx"]) == 7)
        #expect(samples.value("z", ["route": "GET /a"]) == 0)
    }

    @Test func onlyLoopbackCallersSeeMetrics() throws {
        let scoreboard = try Scoreboard()
        for address in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            #expect(metrics(scoreboard, from: address).status == 200, "\(address)")
        }
        for address in ["10.0.0.5", "::ffff:10.0.0.5", "2001:db8::1", "", "1270.0.0.1"] {
            let response = metrics(scoreboard, from: address)
            #expect(response.status == 404, "\(address)")
            #expect(String(decoding: response.body, as: UTF8.self) == #"{"detail":"Not Found"}"#)
        }
    }
}
