import Glibc

/// A worker process: one libfcgi accept loop, one PostgreSQL and one Redis connection, one request at a time, except
/// that a create or a completion may take along the requests already waiting for a worker and make the changes among
/// them together (`serve`). It waits at the `AcceptGate` before it accepts.
final class Worker {
    private let configuration: Configuration
    private let log: Log
    private let connection: FastCGIConnection
    /// Connections for the requests a change takes along; see `serve`.
    private let spares: [FastCGIConnection]
    private let scoreboard: Scoreboard
    private let slot: Int
    private let application: Application
    private var requestCounter = 0
    private var acceptGate: AcceptGate?

    static let bodyLimit = 64 * 1024
    /// The most requests a worker answers together: a change and those it takes along (`docs/decisions.md`,
    /// "Batches of up to 16, then 32").
    static let batchLimit = 32

    /// Worker setup, after the fork: signals, then the PostgreSQL connection (Redis's opens on first use).
    ///
    /// - Throws: `CryptoError` when OpenSSL cannot be set up.
    init(
        configuration: Configuration, log: Log, listenFD: Int32, scoreboard: Scoreboard, slot: Int, openAPI: [UInt8],
        acceptGate: AcceptGate?
    ) throws {
        self.acceptGate = acceptGate
        let listener = try Listener(fd: listenFD)
        connection = FastCGIConnection(listener: listener, keepsConnections: true)
        spares = (1..<Worker.batchLimit).map { _ in FastCGIConnection(listener: listener, keepsConnections: false) }
        // After libfcgi's set-up, which installs its own SIGTERM handler where it finds the default one.
        WorkerSignals.install()
        self.configuration = configuration
        self.log = log
        self.scoreboard = scoreboard
        self.slot = slot
        let services = try Services(configuration: configuration, log: log)
        application = buildApplication(services, openAPI: openAPI, scoreboard: scoreboard)
        services.database.open()
    }

    /// Serves until asked to quit or recycled; returns the exit status.
    func run() -> Int32 {
        var served = 0
        while true {
            WorkerSignals.unblock()
            acceptGate?.enter()
            if WorkerSignals.quitRequested {
                acceptGate?.leave()
                return drain()
            }
            let accepted = connection.accept(blockSignals: WorkerSignals.block)
            if WorkerSignals.takeReopenRequest() { log.reopen() }
            // `serve` gives the place up as soon as it can; every other case gives it up here.
            if case .request = accepted { served += serve() }
            acceptGate?.leave()
            if case .failed(let code) = accepted {
                log.error("accept failed", ["error": SystemError("accept", code).description])
                usleep(10_000)
            }
            if configuration.maxRequests > 0 && served >= configuration.maxRequests {
                connection.finish()
                return 0
            }
        }
    }

    /// After SIGQUIT: serve connections already queued (bounded, since during a reload others keep arriving).
    private func drain() -> Int32 {
        var drained = 0
        WorkerSignals.block()
        while drained < 64 && connection.acceptWaiting() {
            drained += serve()
        }
        connection.finish()
        return 0
    }

    /// A request read from its connection.
    private struct Received {
        let connection: FastCGIConnection
        let request: Request
        /// The request's route; nil when its body was too large to read.
        let match: Router.Match?
        let started: Double
        let read: Double
    }

    /// Answers the request on `connection` and, when it is a create or a completion, the requests already waiting
    /// for a worker, up to `batchLimit` in all: the creates and completions among them in one round trip to
    /// PostgreSQL where its two batch statements decide them (`ClusterScheduler.make`), the others one by one after
    /// them. Under a load of changes they share round trips, the flush, and for creates into one cluster the lock's
    /// cycle and the commit (`docs/decisions.md`, "Changes taken together"); requests taken along wait for those
    /// before them, as they would have waited for a worker. Returns how many requests it answered.
    private func serve() -> Int {
        var batch = [receive(connection)]
        var answers: [Application.Answer?] = [nil]
        if let first = change(batch[0]) {
            scoreboard.markRouted(slot: slot, route: first.route)
            for spare in spares {
                guard spare.acceptWaiting() else { break }
                batch.append(receive(spare))
            }
            answers = application.answer([first] + batch.dropFirst().map(change))
        }
        acceptGate?.leave()
        for (received, answer) in zip(batch, answers) { self.answer(received, answer) }
        return batch.count
    }

    private func change(_ received: Received) -> Application.Change? {
        received.match.flatMap { application.change(received.request, $0) }
    }

    private func receive(_ connection: FastCGIConnection) -> Received {
        let started = monotonicSeconds()
        scoreboard.markBusy(slot: slot, since: started)
        let method = connection.parameter("REQUEST_METHOD") ?? "GET"
        let target = connection.parameter("REQUEST_URI") ?? connection.parameter("DOCUMENT_URI") ?? "/"
        let requestID = requestIdentifier(connection)
        var headers: [String: String] = [:]
        if let value = connection.parameter("CONTENT_TYPE") { headers["content-type"] = value }
        if let value = connection.parameter("HTTP_AUTHORIZATION") { headers["authorization"] = value }
        let declaredLength = Int(connection.parameter("CONTENT_LENGTH") ?? "") ?? 0
        let body = connection.readBody(limit: Worker.bodyLimit, expected: declaredLength)
        let request = Request(
            method: method, target: target, headers: headers, body: body ?? [], requestID: requestID,
            remoteAddress: connection.parameter("REMOTE_ADDR") ?? "")
        return Received(
            connection: connection, request: request, match: body == nil ? nil : application.match(request),
            started: started, read: monotonicSeconds())
    }

    /// Writes the response to `received` (`answered`, when it was answered with the changes it was taken along with),
    /// finishes its connection, and accounts for it in the scoreboard and the log.
    private func answer(_ received: Received, _ answered: Application.Answer?) {
        let request = received.request
        scoreboard.markBusy(slot: slot, since: received.started)
        let (response, failure, route): Application.Answer =
            if let answered {
                answered
            } else if let match = received.match {
                application.respond(to: request, match) { scoreboard.markRouted(slot: slot, route: $0) }
            } else {
                (HTTPError.bodyTooLarge.response, nil, nil)
            }
        let handled = monotonicSeconds()
        if !received.connection.write(response.encoded(requestID: request.requestID)) {
            log.warning("client went away before the response was written", ["request_id": request.requestID])
        }
        received.connection.finish()
        let finished = monotonicSeconds()
        scoreboard.markIdle(
            slot: slot, route: route ?? Scoreboard.unmatchedRoute, status: response.status,
            seconds: finished - received.started)

        if let failure {
            log.error("request failed", ["request_id": request.requestID, "error": String(describing: failure)])
        }
        let milliseconds = (finished - received.started) * 1000
        let slow = milliseconds >= Double(configuration.slowRequestMilliseconds)
        guard slow || log.isEnabled(.info) else { return }
        let fields: KeyValuePairs<String, String> = [
            "request_id": request.requestID, "method": request.method, "path": request.path,
            "status": String(response.status), "duration_ms": threeDecimals(milliseconds),
            "user_id": response.userID.map(String.init) ?? "-",
            "read_ms": threeDecimals((received.read - received.started) * 1000),
            "handle_ms": threeDecimals((handled - received.read) * 1000),
            "write_ms": threeDecimals((finished - handled) * 1000),
        ]
        log.write(slow ? .warning : .info, slow ? "slow request" : "request", fields)
    }

    /// The caller's `X-Request-ID` when it is a short token, else nginx's `$request_id`, else our own.
    private func requestIdentifier(_ connection: FastCGIConnection) -> String {
        if let supplied = connection.parameter("HTTP_X_REQUEST_ID"), isToken(supplied) { return supplied }
        if let fromNginx = connection.parameter("REQUEST_ID"), isToken(fromNginx) { return fromNginx }
        requestCounter += 1
        return "hv-\(getpid())-\(requestCounter)"
    }
}

/// 1–64 characters of letters, digits, `.`, `_` and `-`: safe to echo in a header and a log line.
func isToken(_ text: String) -> Bool {
    let bytes = text.utf8
    return (1...64).contains(bytes.count)
        && bytes.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
        }
}

/// `value` with exactly three decimals, as the log and `hvctl` print durations.
func threeDecimals(_ value: Double) -> String {
    let thousandths = Int((value * 1000).rounded())
    let fraction = String(thousandths % 1000)
    return "\(thousandths / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
}
