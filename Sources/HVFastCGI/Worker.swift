import Glibc

/// A worker process: one libfcgi accept loop, one PostgreSQL and one Redis connection, one request at a time.
final class Worker {
    private let configuration: Configuration
    private let log: Log
    private let connection: FastCGIConnection
    private let scoreboard: Scoreboard
    private let slot: Int
    private let application: Application
    private var requestCounter = 0

    static let bodyLimit = 64 * 1024

    /// Worker setup, after the fork: signals, then the connections (opened lazily on first use).
    ///
    /// - Throws: `CryptoError` when OpenSSL cannot be set up.
    init(
        configuration: Configuration, log: Log, listenFD: Int32, scoreboard: Scoreboard, slot: Int, openAPI: [UInt8]
    ) throws {
        connection = FastCGIConnection(listenFD: listenFD)
        // After libfcgi's set-up, which installs its own SIGTERM handler where it finds the default one.
        WorkerSignals.install()
        self.configuration = configuration
        self.log = log
        self.scoreboard = scoreboard
        self.slot = slot
        let services = try Services(configuration: configuration, log: log)
        application = Application(router: buildRouter(services, openAPI: openAPI, scoreboard: scoreboard))
    }

    /// Serves until asked to quit or recycled; returns the exit status.
    func run() -> Int32 {
        var served = 0
        while true {
            WorkerSignals.unblock()
            if WorkerSignals.quitRequested { return drain() }
            let accepted = connection.accept(blockSignals: WorkerSignals.block)
            if WorkerSignals.takeReopenRequest() { log.reopen() }
            switch accepted {
            case .interrupted:
                continue
            case .failed(let code):
                log.error("accept failed", ["error": SystemError("accept", code).description])
                usleep(10_000)
                continue
            case .request:
                serve()
            }
            served += 1
            if configuration.maxRequests > 0 && served >= configuration.maxRequests {
                connection.finish()
                return 0
            }
        }
    }

    /// After SIGQUIT: serve connections already queued (bounded, since during a reload others keep arriving).
    private func drain() -> Int32 {
        var drained = 0
        while drained < 64 && connection.hasQueuedConnection() {
            switch connection.accept(blockSignals: WorkerSignals.block) {
            case .request: serve()
            case .interrupted, .failed: break
            }
            WorkerSignals.unblock()
            drained += 1
        }
        connection.finish()
        return 0
    }

    private func serve() {
        let started = monotonicSeconds()
        scoreboard.markBusy(slot: slot, since: started)
        let method = connection.parameter("REQUEST_METHOD") ?? "GET"
        let target = connection.parameter("REQUEST_URI") ?? connection.parameter("DOCUMENT_URI") ?? "/"
        let requestID = requestIdentifier()
        var headers: [String: String] = [:]
        if let value = connection.parameter("CONTENT_TYPE") { headers["content-type"] = value }
        if let value = connection.parameter("HTTP_AUTHORIZATION") { headers["authorization"] = value }
        let declaredLength = Int(connection.parameter("CONTENT_LENGTH") ?? "") ?? 0
        let body = connection.readBody(limit: Worker.bodyLimit, expected: declaredLength)
        let read = monotonicSeconds()

        let request = Request(
            method: method, target: target, headers: headers, body: body ?? [], requestID: requestID,
            remoteAddress: connection.parameter("REMOTE_ADDR") ?? "")
        let (response, failure, route) =
            body == nil
            ? (HTTPError.bodyTooLarge.response, nil, nil)
            : application.respond(to: request) { scoreboard.markRouted(slot: slot, route: $0) }
        let handled = monotonicSeconds()
        if !connection.write(response.encoded(requestID: requestID)) {
            log.warning("client went away before the response was written", ["request_id": requestID])
        }
        connection.finish()
        let finished = monotonicSeconds()
        scoreboard.markIdle(
            slot: slot, route: route ?? Scoreboard.unmatchedRoute, status: response.status, seconds: finished - started)

        if let failure {
            log.error("request failed", ["request_id": requestID, "error": String(describing: failure)])
        }
        let milliseconds = (finished - started) * 1000
        let slow = milliseconds >= Double(configuration.slowRequestMilliseconds)
        guard slow || log.isEnabled(.info) else { return }
        let fields: KeyValuePairs<String, String> = [
            "request_id": requestID, "method": method, "path": request.path, "status": String(response.status),
            "duration_ms": threeDecimals(milliseconds), "user_id": response.userID.map(String.init) ?? "-",
            "read_ms": threeDecimals((read - started) * 1000), "handle_ms": threeDecimals((handled - read) * 1000),
            "write_ms": threeDecimals((finished - handled) * 1000),
        ]
        log.write(slow ? .warning : .info, slow ? "slow request" : "request", fields)
    }

    /// The caller's `X-Request-ID` when it is a short token, else nginx's `$request_id`, else our own.
    private func requestIdentifier() -> String {
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
