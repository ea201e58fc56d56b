import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// End-to-end tests of the service skeleton: nginx → the hypervisord master and its workers → PostgreSQL and Redis.
/// Each test starts its own private stack and checks both the HTTP answers and the master's log lines.
@Suite(.serialized)
struct SkeletonTests {
    // MARK: - Routes and errors

    @Test func rootHealthAndReadinessAnswer200WithAndWithoutTrailingSlash() throws {
        let stack = try startedStack()
        defer { stack.stop() }

        let root = try stack.client.get("/")
        #expect(root.status == 200)
        #expect(root.jsonObject?["message"] is String)

        // The master read it from the SwiftPM resource bundle next to the binary.
        let document = try stack.client.get("/openapi.json")
        #expect(document.status == 200)
        #expect(document.jsonObject?["openapi"] as? String == "3.1.0", "\(document.text.prefix(200))")

        for path in ["/healthz", "/healthz/"] {
            let health = try stack.client.get(path)
            #expect(health.status == 200, "\(path)")
            #expect(health.jsonObject?["status"] as? String == "ok", "\(path): \(health.text)")
        }
        for path in ["/readyz", "/readyz/"] {
            let ready = try stack.client.get(path)
            #expect(ready.status == 200, "\(path)")
            #expect(ready.jsonObject?["postgres"] as? String == "up", "\(path): \(ready.text)")
            #expect(ready.jsonObject?["redis"] as? String == "up", "\(path): \(ready.text)")
            #expect(ready.text.contains(#""postgres":"up""#) && ready.text.contains(#""redis":"up""#), "\(ready.text)")
        }
    }

    @Test func unknownPathWrongMethodAndNginxRefusalsAnswerJSONErrorsWithRequestIDs() throws {
        let stack = try startedStack()
        defer { stack.stop() }

        let missing = try stack.client.get("/no/such/thing")
        #expect(missing.status == 404)
        #expect(missing.jsonObject?["detail"] as? String == "Not Found", "\(missing.text)")
        #expect(isRequestID(missing.header("X-Request-ID")), "\(missing.headers)")

        let wrongMethod = try stack.client.request("POST", "/healthz", body: [])
        #expect(wrongMethod.status == 405)
        #expect(wrongMethod.jsonObject?["detail"] is String, "\(wrongMethod.text)")
        #expect(wrongMethod.header("Allow") == "GET, HEAD", "\(wrongMethod.headers)")
        #expect(isRequestID(wrongMethod.header("X-Request-ID")), "\(wrongMethod.headers)")

        // HEAD wherever GET: the GET's status and headers, no body. A GET is pipelined behind the HEAD, and the bytes
        // after the HEAD's headers, read as its Content-Length says a body would be, must be the GET's answer.
        let get = try stack.client.get("/healthz")
        let pipelined =
            "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        let head = try stack.client.send(raw: Array(pipelined.utf8))
        #expect(head.status == 200, "\(head.status) \(head.text)")
        #expect(head.text.hasPrefix("HTTP/1.1 200"), "the HEAD answer had a body: \(head.text)")
        #expect(head.header("Content-Length") == get.header("Content-Length"), "\(head.headers)")
        #expect(head.header("Content-Type") == get.header("Content-Type"), "\(head.headers)")
        #expect(try stack.client.request("HEAD", "/users/login/").header("Allow") == "POST")

        // 70 KiB: over nginx's client_max_body_size (64k), so nginx answers by itself.
        let huge = Array(repeating: UInt8(ascii: "a"), count: 70 * 1024)
        let tooLarge = try stack.client.request(
            "POST", "/users/register/", headers: ["Content-Type": "application/json"], body: huge)
        #expect(tooLarge.status == 413)
        #expect(tooLarge.jsonObject?["detail"] is String, "\(tooLarge.text)")
        #expect(isRequestID(tooLarge.header("X-Request-ID")), "\(tooLarge.headers)")

        // A NUL in the URI: nginx refuses the request line itself, in the same shape.
        let malformed = try stack.client.get("/v1/deployments/%00")
        #expect(malformed.status == 400)
        #expect(malformed.jsonObject?["detail"] as? String == "Bad Request", "\(malformed.text)")
        #expect(isRequestID(malformed.header("X-Request-ID")), "\(malformed.headers)")

        // Everything else nginx refuses by itself answers in the same shape (nginx/errors.conf). TRACE and CONNECT,
        // which nginx refuses before any location, are answered by the application with the path's Allow header.
        let header = String(repeating: "h", count: 20 * 1024)
        let chunked = "\(String(70 * 1024, radix: 16))\r\n\(String(repeating: "a", count: 70 * 1024))\r\n0\r\n\r\n"
        let refusals: [(request: String, status: Int, allow: String?)] = [
            ("TRACE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "GET, HEAD"),
            ("CONNECT /users/login/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "POST"),
            // The refused TRACE's body is read on its way to the application, and is too large.
            ("TRACE /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(chunked)", 413, nil),
            ("GET /\(String(repeating: "a", count: 10 * 1024)) HTTP/1.1\r\nHost: x\r\n\r\n", 414, nil),
            ("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(header)\r\n\r\n", 400, nil),
            ("POST /users/login/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, nil),
            ("GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n", 505, nil),
        ]
        for (request, status, allow) in refusals {
            let line = String(request.prefix(while: { $0 != "\r" }).prefix(40))
            let response = try stack.client.send(raw: Array(request.utf8))
            #expect(response.status == status, "\(line): \(response.status) \(response.text.prefix(200))")
            #expect(response.jsonObject?["detail"] is String, "\(line): \(response.text.prefix(200))")
            #expect(isRequestID(response.header("X-Request-ID")), "\(line): \(response.headers)")
            if let allow { #expect(response.header("Allow") == allow, "\(line): \(response.headers)") }
        }

        let ok = try stack.client.get("/")
        #expect(isRequestID(ok.header("X-Request-ID")), "\(ok.headers)")
    }

    @Test func callersRequestIDIsEchoedAndLoggedUnlessItIsUnsafe() throws {
        let stack = try startedStack()
        defer { stack.stop() }

        let echoed = try stack.client.get("/healthz", headers: ["X-Request-ID": "abc-123"])
        #expect(echoed.status == 200)
        #expect(echoed.header("X-Request-ID") == "abc-123")
        #expect(
            stack.waitForLog(containing: "request_id=abc-123"),
            "no log line with request_id=abc-123:\n\(stack.logTail())")

        let unsafe = ["has some spaces", String(repeating: "x", count: 100)]
        for sent in unsafe {
            let response = try stack.client.get("/healthz", headers: ["X-Request-ID": sent])
            #expect(response.status == 200)
            let returned = response.header("X-Request-ID")
            #expect(returned != sent, "\(sent) was echoed")
            #expect(isRequestID(returned), "\(String(describing: returned))")
        }
        #expect(!stack.logText().contains("has some spaces"))
        #expect(!stack.logText().contains(String(repeating: "x", count: 100)))
    }

    // MARK: - Process management

    @Test func workerKilledWithSigkillIsReplacedAndServiceKeepsAnswering() throws {
        let stack = try startedStack(["HV_WORKERS": "2"])
        defer { stack.stop() }

        let before = try #require(waitForWorkers(stack, count: 2))
        let victim = before[0]
        #expect(kill(victim, SIGKILL) == 0)

        let line = "worker pid=\(victim) exited signal=9 unexpectedly"
        #expect(stack.waitForLog(containing: line), "missing \"\(line)\":\n\(stack.logTail())")
        let after = waitUntil(timeout: 10) { () -> [pid_t]? in
            let pids = stack.workerPIDs()
            return pids.count == 2 && !pids.contains(victim) ? pids : nil
        }
        #expect(after != nil, "pool did not return to 2 workers: \(stack.workerPIDs())")
        #expect(after?.contains(before[1]) == true, "the surviving worker should be untouched")

        for _ in 0..<10 {
            #expect(try stack.client.get("/").status == 200)
        }
    }

    /// One worker at a time accepts (`AcceptGate`), so the others wait for it when the signals come.
    @Test func sighupReplacesEveryWorkerWithoutDroppingARequest() throws {
        let stack = try startedStack(["HV_WORKERS": "3", "HV_ACCEPTING_WORKERS": "1"])
        defer { stack.stop() }
        let before = try #require(waitForWorkers(stack, count: 3))

        let load = LoadGenerator(client: stack.client, threads: 4, paths: ["/", "/readyz"])
        load.start()
        // Both reloads happen under load, and the load goes on for a while after each of them.
        #expect(load.waitForMore(50, atLeast: 1), "load did not get going")
        try stack.signalMaster(SIGHUP)
        let first = stack.waitForLog(containing: "reload complete", timeout: 30)
        #expect(first, "first reload did not complete:\n\(stack.logTail())")
        #expect(load.waitForMore(50, atLeast: 1))
        try stack.signalMaster(SIGHUP)
        let second = waitUntil(timeout: 30) { () -> Bool? in
            occurrences(of: "reload complete", in: stack.logText()) >= 2 ? true : nil
        }
        #expect(second != nil, "second reload did not complete:\n\(stack.logTail())")
        #expect(load.waitForMore(50, atLeast: 1))
        let results = load.stop()

        #expect(results.count >= 150)
        let failures = results.filter { $0 != "200" }
        #expect(failures.isEmpty, "\(failures.count) of \(results.count) requests failed: \(failures.prefix(10))")

        let after = waitForWorkers(stack, count: 3) ?? stack.workerPIDs()
        #expect(after.count == 3, "\(after)")
        #expect(Set(after).isDisjoint(with: before), "old workers \(before), now \(after)")
        let log = stack.logText()
        #expect(workerCrashes(in: log).isEmpty, "\(stack.logTail())")
        #expect(occurrences(of: "reloading: replacing 3 workers one at a time", in: log) == 2, "\(stack.logTail())")
        for pid in before {
            #expect(log.contains("worker pid=\(pid) exited status=0 (replaced)"), "worker \(pid):\n\(stack.logTail())")
        }
    }

    @Test func sigusr1AfterRotationWritesMasterAndWorkerLinesToAFreshFile() throws {
        let stack = try startedStack(["HV_WORKERS": "2"])
        defer { stack.stop() }
        _ = try #require(waitForWorkers(stack, count: 2))
        #expect(try stack.client.get("/healthz", headers: ["X-Request-ID": "before-rotation"]).status == 200)
        #expect(stack.waitForLog(containing: "request_id=before-rotation"))

        let rotated = stack.logPath + ".1"
        #expect(rename(stack.logPath, rotated) == 0)
        #expect(!FileManager.default.fileExists(atPath: stack.logPath))
        try stack.signalMaster(SIGUSR1)
        #expect(
            stack.waitForLog(containing: "reopened log file"),
            "no \"reopened log file\" in a new \(stack.logPath):\n\(stack.logTail())")

        for index in 0..<6 {
            let response = try stack.client.get("/healthz", headers: ["X-Request-ID": "after-rotation-\(index)"])
            #expect(response.status == 200)
        }
        let fresh = stack.logText()
        let old = (try? String(contentsOfFile: rotated, encoding: .utf8)) ?? ""
        for index in 0..<6 {
            let id = "request_id=after-rotation-\(index) "
            #expect(
                stack.waitForLog(containing: id, timeout: 5),
                "request line \(id) not in the new file:\n\(fresh)\n--- rotated file tail:\n\(old.suffix(2000))")
            #expect(!old.contains(id), "request line \(id) went to the rotated file")
        }
        #expect(old.contains("request_id=before-rotation"))
        #expect(!old.contains("reopened log file"))
    }

    @Test func sigtermStopsMasterAndEveryWorkerAndRemovesSocketAndPidFile() throws {
        let stack = try startedStack(["HV_WORKERS": "3", "HV_ACCEPTING_WORKERS": "1"])
        defer { stack.stop() }
        let workers = try #require(waitForWorkers(stack, count: 3))
        let master = stack.masterPID
        #expect(stack.pidFromFile() == master)
        #expect(FileManager.default.fileExists(atPath: stack.socketPath))
        #expect(processes(mentioning: stack.pidFilePath).sorted() == ([master] + workers).sorted())

        try stack.signalMaster(SIGTERM)
        let status = stack.waitForMasterExit(timeout: 15)
        #expect(status == 0, "master exit status \(String(describing: status)):\n\(stack.logTail())")
        let leftovers = waitUntil(timeout: 10) { () -> Bool? in
            processes(mentioning: stack.pidFilePath).isEmpty && !workers.contains(where: Stack.isAlive) ? true : nil
        }
        #expect(leftovers != nil, "still running: \(processes(mentioning: stack.pidFilePath))")
        #expect(!FileManager.default.fileExists(atPath: stack.socketPath), "socket file left behind")
        #expect(!FileManager.default.fileExists(atPath: stack.pidFilePath), "pid file left behind")
        let log = stack.logText()
        #expect(log.contains("stop requested"))
        #expect(log.contains("hypervisord stopped"))
    }

    @Test func sigquitLetsRequestsInFlightFinishWith200() throws {
        // The real scrypt cost makes each registration take long enough to still be running at SIGQUIT.
        let stack = try startedStack(["HV_WORKERS": "2", "HV_TEST_SCRYPT_LOG_N": "17"])
        defer { stack.stop() }
        let workers = try #require(waitForWorkers(stack, count: 2))

        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 16)
        let inFlight = (0..<2).map { index in
            Background {
                try stack.client.request(
                    "POST", "/users/register/",
                    json: ["username": "quit\(tag)\(index)", "password": "pw"],
                    headers: ["X-Request-ID": "in-flight-\(index)"])
            }
        }
        // A worker idles asleep in accept(); one seen running is serving a request.
        var seenRunning: Set<pid_t> = []
        let busy = waitUntil(timeout: 15, interval: 0.002) { () -> Bool? in
            for pid in workers where processState(pid) == "R" { seenRunning.insert(pid) }
            return seenRunning.count == workers.count ? true : nil
        }
        #expect(busy != nil, "workers never both busy; seen running: \(seenRunning)")
        try stack.signalMaster(SIGQUIT)

        for (index, request) in inFlight.enumerated() {
            let response = try request.value(timeout: 60)
            #expect(response.status == 200, "request \(index): \(response.status) \(response.text)")
        }
        let status = stack.waitForMasterExit(timeout: 30)
        #expect(status == 0, "master exit status \(String(describing: status)):\n\(stack.logTail())")
        let log = stack.logText()
        let stop = try #require(log.range(of: "graceful stop requested"), "\(stack.logTail())")
        for index in 0..<2 {
            // Logged when the request finished: after the stop was requested, so it was in flight.
            #expect(log[stop.upperBound...].contains("request_id=in-flight-\(index) "), "\(stack.logTail())")
        }
        #expect(!FileManager.default.fileExists(atPath: stack.socketPath), "socket file left behind")
        #expect(!FileManager.default.fileExists(atPath: stack.pidFilePath), "pid file left behind")
        #expect(processes(mentioning: stack.pidFilePath).isEmpty)
    }

    @Test func workersRecycleAfterMaxRequestsWithoutFailingARequest() throws {
        let stack = try startedStack(["HV_WORKERS": "2", "HV_MAX_REQUESTS": "50"])
        defer { stack.stop() }
        let before = try #require(waitForWorkers(stack, count: 2))

        var statuses: [Int: Int] = [:]
        var errors: [String] = []
        for _ in 0..<300 {
            do {
                statuses[try stack.client.get("/").status, default: 0] += 1
            } catch {
                errors.append("\(error)")
            }
        }
        #expect(statuses == [200: 300], "statuses \(statuses), errors \(errors.prefix(5))")
        #expect(errors.isEmpty)

        let after = waitForWorkers(stack, count: 2) ?? stack.workerPIDs()
        #expect(after.count == 2)
        #expect(Set(after).isDisjoint(with: before), "before \(before), after \(after)")
        let log = stack.logText()
        // 300 requests at 50 per worker: at least 4 recycles however the requests were spread.
        #expect(occurrences(of: "(recycled)", in: log) >= 4, "\(stack.logTail())")
        #expect(workerCrashes(in: log).isEmpty, "\(stack.logTail())")
    }

    @Test func metricsCountEveryRequestByRouteAcrossRecycledWorkers() throws {
        let stack = try startedStack(["HV_WORKERS": "2", "HV_MAX_REQUESTS": "20"])
        defer { stack.stop() }
        let healthz = #"hv_requests_total{route="GET /healthz",code="2xx"}"#
        let other = #"hv_requests_total{route="other",code="4xx"}"#
        let login = #"hv_requests_total{route="POST /users/login",code="4xx"}"#
        let first = try stack.client.get("/metrics/")
        #expect(first.status == 200)
        #expect(first.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", "\(first.headers)")
        let before = try #require(prometheusSamples(first.text), "\(first.text)")

        for _ in 0..<60 { #expect(try stack.client.get("/healthz/").status == 200) }
        #expect(try stack.client.get("/no/such/thing").status == 404)
        let badLogin = try stack.client.request(
            "POST", "/users/login/", headers: ["Content-Type": "application/json"], body: Array("{".utf8))
        #expect(badLogin.status == 422)

        // A worker counts a request right after writing its response, so the last one may trail the client by an
        // instant; wait for it, then expect the counts exactly (60 health checks over at least two recycles).
        let after = waitUntil(timeout: 5) { () -> [String: Double]? in
            guard let text = try? stack.client.get("/metrics").text, let samples = prometheusSamples(text),
                samples[login] == (before[login] ?? -1) + 1
            else { return nil }
            return samples
        }
        let samples = try #require(after, "the bad login was never counted")
        #expect(samples[healthz] == (before[healthz] ?? -1) + 60)
        #expect(samples[other] == (before[other] ?? -1) + 1)
        let histogram = #"hv_request_duration_seconds_bucket{route="GET /healthz",le="+Inf"}"#
        #expect(samples[histogram] == samples[healthz])
        #expect(samples[#"hv_request_duration_seconds_count{route="GET /healthz"}"#] == samples[healthz])
        let busy = samples[#"hv_workers{state="busy"}"#] ?? 0
        let idle = samples[#"hv_workers{state="idle"}"#] ?? 0
        #expect(busy >= 1, "the worker answering /metrics is busy")
        #expect((1.0...2.0).contains(busy + idle), "\(busy) busy, \(idle) idle")
        #expect(occurrences(of: "(recycled)", in: stack.logText()) >= 2, "\(stack.logTail())")
    }

    @Test func workerStuckInARequestPastTheTimeoutIsKilledAndReplaced() throws {
        // A worker stopped (SIGSTOP) in the middle of a request is exactly a stuck worker to the master.
        let stack = try startedStack(["HV_WORKERS": "1", "HV_REQUEST_TIMEOUT": "2", "HV_TEST_SCRYPT_LOG_N": "17"])
        defer { stack.stop() }
        let worker = try #require(waitForWorkers(stack, count: 1)?.first)
        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 16)

        var stopped = false
        var stuck: Background<HTTPResponse>?
        for attempt in 0..<5 where !stopped {
            let request = Background {
                try stack.client.request(
                    "POST", "/users/register/", json: ["username": "stuck\(tag)\(attempt)", "password": "pw"])
            }
            let running = waitUntil(timeout: 15, interval: 0.002) { processState(worker) == "R" ? true : nil }
            guard running != nil else {
                _ = try? request.value(timeout: 30)
                continue
            }
            kill(worker, SIGSTOP)
            if request.isFinished {
                // Stopped between requests: not stuck. Let it go and try again.
                kill(worker, SIGCONT)
                _ = try? request.value(timeout: 30)
            } else {
                stopped = true
                stuck = request
            }
        }
        try #require(stopped, "could not stop the worker in the middle of a request")

        let killed = "worker pid=\(worker) exited signal=9 (killed after 2s in one request)"
        #expect(stack.waitForLog(containing: "worker pid=\(worker) busy for over 2s; killing it", timeout: 15))
        #expect(stack.waitForLog(containing: killed, timeout: 15), "missing \"\(killed)\":\n\(stack.logTail())")
        let response = try #require(stuck).value(timeout: 40)
        #expect(response.status >= 500, "the stuck request cannot have succeeded: \(response.status)")
        #expect(response.jsonObject?["detail"] is String, "\(response.text)")

        let replacement = waitUntil(timeout: 10) { () -> pid_t? in
            let pids = stack.workerPIDs()
            return pids.count == 1 && pids[0] != worker ? pids[0] : nil
        }
        #expect(replacement != nil, "no replacement worker: \(stack.workerPIDs())")
        #expect(try stack.client.get("/").status == 200)
    }

    // MARK: - Dependencies

    @Test func postgresDownAnswers503AndServiceRecoversWhenItReturns() throws {
        let stack = try startedStack(["HV_WORKERS": "2"])
        defer { stack.stop() }
        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 16)

        try stack.stopPostgres()
        let notReady = waitUntil(timeout: 15) { () -> HTTPResponse? in
            guard let response = try? stack.client.get("/readyz") else { return nil }
            return response.status == 503 ? response : nil
        }
        let readyz = try #require(notReady, "/readyz never answered 503 with PostgreSQL stopped")
        #expect(readyz.jsonObject?["postgres"] as? String == "down", "\(readyz.text)")
        #expect(readyz.jsonObject?["detail"] is String, "\(readyz.text)")

        for index in 0..<4 {
            let register = try stack.client.post(
                "/users/register/", json: ["username": "down\(tag)\(index)", "password": "pw"])
            #expect(register.status == 503, "\(register.status) \(register.text)")
            #expect(register.jsonObject?["detail"] is String, "\(register.text)")
        }
        #expect(try stack.client.get("/healthz").status == 200)
        #expect(try stack.client.get("/").status == 200)

        try stack.startPostgres()
        let master = stack.masterPID
        let ready = waitUntil(timeout: 20) { stack.isReady() ? true : nil }
        #expect(ready != nil, "/readyz not 200 after PostgreSQL came back:\n\(stack.logTail())")
        var attempt = 0
        let registered = waitUntil(timeout: 20) { () -> HTTPResponse? in
            attempt += 1
            guard
                let response = try? stack.client.post(
                    "/users/register/", json: ["username": "back\(tag)\(attempt)", "password": "pw"])
            else { return nil }
            return (200..<300).contains(response.status) ? response : nil
        }
        #expect(registered != nil, "registration never succeeded again:\n\(stack.logTail())")
        #expect(registered?.jsonObject?["username"] as? String == "back\(tag)\(attempt)")
        // Every worker reconnects: several readiness checks in a row pass.
        for _ in 0..<6 {
            #expect(try stack.client.get("/readyz").status == 200)
        }
        #expect(stack.masterPID == master && stack.masterIsRunning, "hypervisord was restarted")
        #expect(workerCrashes(in: stack.logText()).isEmpty, "\(stack.logTail())")
    }

    @Test func redisDownStillAnswers200AndReportsRedisDownUntilItReturns() throws {
        let stack = try startedStack(["HV_WORKERS": "2"])
        defer { stack.stop() }

        try stack.stopRedis()
        let down = waitUntil(timeout: 15) { () -> HTTPResponse? in
            guard let response = try? stack.client.get("/readyz") else { return nil }
            return response.jsonObject?["redis"] as? String == "down" ? response : nil
        }
        let readyz = try #require(down, "/readyz never reported Redis down")
        #expect(readyz.status == 200, "\(readyz.text)")
        #expect(readyz.jsonObject?["postgres"] as? String == "up", "\(readyz.text)")
        for _ in 0..<4 {
            #expect(try stack.client.get("/").status == 200)
            let again = try stack.client.get("/readyz")
            #expect(again.status == 200)
            #expect(again.jsonObject?["redis"] as? String == "down", "\(again.text)")
        }

        try stack.startRedis()
        // Up on several checks in a row, so every worker has reconnected.
        var consecutive = 0
        let up = waitUntil(timeout: 20) { () -> Bool? in
            guard let response = try? stack.client.get("/readyz") else { return nil }
            consecutive =
                response.status == 200 && response.jsonObject?["redis"] as? String == "up" ? consecutive + 1 : 0
            return consecutive >= 8 ? true : nil
        }
        #expect(up != nil, "Redis not reported up again:\n\(stack.logTail())")
    }

    // MARK: - Configuration

    @Test func invalidWorkerCountStopsTheStartWithOneLineNamingTheVariable() throws {
        let binary =
            ProcessInfo.processInfo.environment["HV_TEST_BINARY"]
            ?? Stack.packageRoot.appendingPathComponent(".build/debug/hypervisord").path
        var template = Array("/tmp/hvt-config.XXXXXX".utf8CString)
        let made = try #require(mkdtemp(&template))
        let directory = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let environment = [
            "PATH": "/usr/bin:/bin",
            "HV_STATE_DIR": directory,
            "HV_WORKERS": "0",
            "JWT_SECRET_KEY": String(repeating: "k", count: 48),
            "SQL_DB_URL": "postgresql://nobody@127.0.0.1:1/none",
            "REDIS_HOST": "127.0.0.1",
        ]
        let pid = try Spawn.spawn(
            binary, [], environment: environment, directory: directory, output: directory + "/out",
            error: directory + "/err")
        let status = Spawn.wait(pid)
        let output = (try? String(contentsOfFile: directory + "/out", encoding: .utf8)) ?? ""
        let error = (try? String(contentsOfFile: directory + "/err", encoding: .utf8)) ?? ""

        #expect(status != 0)
        #expect(status < 128, "killed by a signal (a trap?): \(status)")
        #expect(error == "hypervisord: HV_WORKERS must be a positive integer (1-512) (got \"0\")\n")
        #expect(output.isEmpty, "\(output)")
    }
}

// MARK: - Helpers

/// Starts a private stack with `environment`; the caller stops it.
private func startedStack(_ environment: [String: String] = [:]) throws -> Stack {
    let stack = try Stack(environment: environment)
    try stack.start()
    return stack
}

/// Polls `condition` until it returns a value or `timeout` seconds pass.
private func waitUntil<T>(timeout: TimeInterval, interval: TimeInterval = 0.05, _ condition: () -> T?) -> T? {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if let value = condition() { return value }
        if Date() > deadline { return nil }
        usleep(useconds_t(interval * 1_000_000))
    }
}

/// The master's workers once there are exactly `count` of them.
private func waitForWorkers(_ stack: Stack, count: Int, timeout: TimeInterval = 15) -> [pid_t]? {
    waitUntil(timeout: timeout) { () -> [pid_t]? in
        let pids = stack.workerPIDs()
        return pids.count == count ? pids : nil
    }
}

/// Samples by series (`name{labels}`) from Prometheus' text format; nil when a line is not a sample.
private func prometheusSamples(_ text: String) -> [String: Double]? {
    var samples: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
            return nil
        }
        samples[String(line[..<space])] = value
    }
    return samples
}

/// Whether a response carried a short token as `X-Request-ID`.
private func isRequestID(_ value: String?) -> Bool {
    guard let value, (1...64).contains(value.utf8.count) else { return false }
    return value.unicodeScalars.allSatisfy {
        CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)
    }
}

/// The master's `worker pid=N exited ... unexpectedly` lines.
private func workerCrashes(in log: String) -> [Substring] {
    log.split(separator: "\n").filter { $0.contains("msg=\"worker pid=") && $0.contains(" unexpectedly\"") }
}

private func occurrences(of needle: String, in text: String) -> Int {
    text.components(separatedBy: needle).count - 1
}

/// The state letter in /proc/PID/stat (`R` running, `S` sleeping, `T` stopped...), nil when gone.
private func processState(_ pid: pid_t) -> Character? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    return stat[stat.index(after: close)...].split(separator: " ").first?.first
}

/// Live processes whose command line mentions `text` (the master and its forked workers share one).
private func processes(mentioning text: String) -> [pid_t] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { entry -> pid_t? in
        guard let pid = pid_t(entry), pid != getpid(),
            let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
            String(decoding: data, as: UTF8.self).contains(text),
            let state = processState(pid), state != "Z"
        else { return nil }
        return pid
    }
}

/// Runs `body` on its own thread; `value(timeout:)` waits for its result.
private final class Background<T: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var result: Result<T, any Error>?

    init(_ body: @escaping @Sendable () throws -> T) {
        Thread.detachNewThread { [self] in
            let outcome = Result { try body() }
            lock.withLock { result = outcome }
            done.signal()
        }
    }

    var isFinished: Bool { lock.withLock { result != nil } }

    /// - Throws: what `body` threw, or `HTTPClientError.timedOut` when it did not finish in time.
    func value(timeout: TimeInterval) throws -> T {
        guard done.wait(timeout: .now() + timeout) == .success else {
            throw HTTPClientError.timedOut(after: timeout, received: 0)
        }
        done.signal()
        return try lock.withLock { result! }.get()
    }
}

/// Threads each sending sequential GETs (cycling through `paths`) until stopped; records each status or error.
private final class LoadGenerator: @unchecked Sendable {
    private let client: HTTPClient
    private let threads: Int
    private let paths: [String]
    private let lock = NSLock()
    private var results: [String] = []
    private var stopping = false
    private let finished = DispatchGroup()

    init(client: HTTPClient, threads: Int, paths: [String]) {
        self.client = client
        self.threads = threads
        self.paths = paths
    }

    var completed: Int { lock.withLock { results.count } }

    /// Waits until `count` more requests completed and `seconds` passed; false if that takes over 30 s.
    func waitForMore(_ count: Int, atLeast seconds: TimeInterval) -> Bool {
        let target = completed + count
        let earliest = Date().addingTimeInterval(seconds)
        return waitUntil(timeout: 30) { completed >= target && Date() >= earliest ? true : nil } != nil
    }

    func start() {
        for thread in 0..<threads {
            finished.enter()
            Thread.detachNewThread { [self] in
                var index = thread
                // Bounded even if stop() is never called.
                let deadline = Date().addingTimeInterval(120)
                while !lock.withLock({ stopping }) && Date() < deadline {
                    let path = paths[index % paths.count]
                    index += 1
                    let outcome: String
                    do {
                        let response = try client.get(path)
                        outcome = response.status == 200 ? "200" : "\(path): \(response.status) \(response.text)"
                    } catch {
                        outcome = "\(path): \(error)"
                    }
                    lock.withLock { results.append(outcome) }
                }
                finished.leave()
            }
        }
    }

    /// Stops the threads, waits for them, and returns every outcome.
    func stop() -> [String] {
        lock.withLock { stopping = true }
        _ = finished.wait(timeout: .now() + 30)
        return lock.withLock { results }
    }
}
