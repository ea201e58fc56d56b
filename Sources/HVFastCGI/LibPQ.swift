import CPostgres
import Glibc

/// A failed PostgreSQL call. The description carries the server's message but never SQL or bind values.
struct PostgresError: Error, CustomStringConvertible {
    /// The SQLSTATE, when the server sent one.
    let sqlState: SQLState?
    let message: String
    /// The connection is gone: the caller must drop it and reconnect.
    let connectionLost: Bool
    var description: String { "PostgreSQL error \(sqlState?.rawValue ?? "-"): \(message)" }
}

/// SQLSTATEs the code reacts to, by name.
struct SQLState: RawRepresentable, Equatable, Sendable {
    let rawValue: String
    init(rawValue: String) { self.rawValue = rawValue }
    static let uniqueViolation = SQLState(rawValue: "23505")
}

/// A named SQL statement, prepared once per connection on first use. Values are always bound as `$1, $2, …`.
struct Statement: Hashable, Sendable {
    let name: String
    let sql: String
}

/// The rows of one statement, in text format. The corresponding libpq function is `PQclear`.
final class PostgresResult {
    fileprivate let result: OpaquePointer

    init(_ result: OpaquePointer) { self.result = result }
    deinit { PQclear(result) }

    var rowCount: Int { Int(PQntuples(result)) }
    var columnCount: Int { Int(PQnfields(result)) }
    var affectedRows: Int { Int(String(cString: PQcmdTuples(result))) ?? 0 }

    /// The corresponding libpq functions are `PQgetvalue` and `PQgetisnull`.
    func string(_ row: Int, _ column: Int) -> String? {
        if PQgetisnull(result, Int32(row), Int32(column)) != 0 { return nil }
        return String(cString: PQgetvalue(result, Int32(row), Int32(column)))
    }

    /// An integer column; nil for NULL.
    func int(_ row: Int, _ column: Int) -> Int64? {
        guard PQgetisnull(result, Int32(row), Int32(column)) == 0 else { return nil }
        return strtoll(PQgetvalue(result, Int32(row), Int32(column)), nil, 10)
    }

    func bool(_ row: Int, _ column: Int) -> Bool { string(row, column) == "t" }

    /// A `timestamptz` column in ISO 8601, UTC, to the microsecond (`2026-12-06T04:26:01.373310Z`); nil for NULL.
    func timestamp(_ row: Int, _ column: Int) -> String? { string(row, column).map(iso8601UTC) }
}

/// PostgreSQL's text for a `timestamptz` on a connection whose `TimeZone` is UTC and `DateStyle` ISO
/// (`2026-12-06 04:26:01.37331+00`, no fraction when it is zero) in ISO 8601 with six fraction digits. Formatting it
/// here costs a fraction of `to_char` in the server, which took a tenth of the machine's CPU serving list pages.
/// Text of any other shape (`infinity`) is returned as it is.
func iso8601UTC(_ text: String) -> String {
    var bytes = Array(text.utf8)
    guard bytes.count >= 22, bytes[10] == UInt8(ascii: " "), bytes.suffix(3).elementsEqual("+00".utf8) else {
        return text
    }
    bytes[10] = UInt8(ascii: "T")
    bytes.removeLast(3)
    let digits = bytes.lastIndex(of: UInt8(ascii: ".")).map { bytes.count - $0 - 1 }
    if digits == nil { bytes.append(UInt8(ascii: ".")) }
    bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: 6 - (digits ?? 0)))
    bytes.append(UInt8(ascii: "Z"))
    return String(decoding: bytes, as: UTF8.self)
}

/// One libpq connection, owned by one worker process and used by one request at a time.
final class PostgresConnection {
    private var connection: OpaquePointer?
    private var prepared: Set<String> = []

    /// Connects to `url`, with prepared statements run from their cached generic plans (`plan_cache_mode`), and
    /// timestamps written in UTC for `PostgresResult.timestamp`.
    ///
    /// The statements are written so that their generic plans walk the right indexes whatever the statistics say
    /// (`GenericPlanTests`; `TenantIndexTests` checks what the list pages read), and planning per execution is what
    /// they would otherwise cost: ≈ 0.5 ms for the scheduler's create statement, under the cluster's lock, and
    /// ≈ 0.15 ms, a sixth of the machine's CPU, per list page. Left to itself, the plan cache keeps planning whenever
    /// it estimates a custom plan cheaper, as for the list pages, and sometimes chose custom plans for the create
    /// statement after an `ANALYZE` (one bench run planned it 12,087 times in 21,245 runs, halving the cluster's
    /// throughput).
    ///
    /// - Throws: `PostgresError` with `connectionLost` when the server cannot be reached.
    /// The corresponding libpq function is `PQconnectdb`.
    init(url: String) throws(PostgresError) {
        connection = PQconnectdb(url)
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            PQfinish(connection)
            self.connection = nil
            throw PostgresError(sqlState: nil, message: trimmed(message), connectionLost: true)
        }
        _ = try unsafeExecute(
            script: "SET plan_cache_mode = force_generic_plan; SET TimeZone = 'UTC'; SET DateStyle = 'ISO'")
    }

    deinit { PQfinish(connection) }

    var isHealthy: Bool { connection.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// Runs a prepared statement with text parameters (nil is SQL NULL).
    ///
    /// - Throws: `PostgresError`. The corresponding libpq functions are `PQprepare` and `PQexecPrepared`.
    @discardableResult
    func execute(_ statement: Statement, _ parameters: [String?] = []) throws(PostgresError) -> PostgresResult {
        let connection = try prepare(statement)
        return try withCStrings(parameters) { values throws(PostgresError) in
            try check(PQexecPrepared(connection, statement.name, Int32(parameters.count), values, nil, nil, 0))
        }
    }

    /// The generic plan of `statement` (`EXPLAIN (COSTS OFF)`, one line per row), made without running it and kept in
    /// the prepared statement for its later runs.
    ///
    /// - Throws: `PostgresError`. The corresponding libpq functions are `PQdescribePrepared` and `PQnparams`.
    @discardableResult
    func explain(_ statement: Statement) throws(PostgresError) -> [String] {
        let connection = try prepare(statement)
        let count = Int(PQnparams(try check(PQdescribePrepared(connection, statement.name)).result))
        let arguments = count == 0 ? "" : "(" + repeatElement("NULL", count: count).joined(separator: ", ") + ")"
        let plan = try unsafeExecute(script: "EXPLAIN (COSTS OFF) EXECUTE \(statement.name)\(arguments)")
        return (0..<plan.rowCount).compactMap { plan.string($0, 0) }
    }

    /// The connection, with `statement` prepared on it.
    private func prepare(_ statement: Statement) throws(PostgresError) -> OpaquePointer {
        guard let connection else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        if !prepared.contains(statement.name) {
            _ = try check(PQprepare(connection, statement.name, statement.sql, 0, nil))
            prepared.insert(statement.name)
        }
        return connection
    }

    /// Runs several prepared statements in one network round trip (libpq pipeline mode), in order.
    ///
    /// The server still runs them one after another, each with its own snapshot, so a statement after
    /// `pg_advisory_xact_lock` sees everything committed before the lock was granted.
    /// - Throws: the first statement's `PostgresError`; the statements after it do not run.
    func pipeline(_ steps: [(Statement, [String?])]) throws(PostgresError) -> [PostgresResult] {
        try pipeline(transactions: [steps])[0].get()
    }

    /// Runs several groups of prepared statements in one network round trip, each group followed by a sync point:
    /// outside `BEGIN` a group is one implicit transaction, committed at its sync point, or rolled back whole when
    /// one of its statements fails, and the groups after it still run. Returns each group's results, or its first
    /// statement's error.
    ///
    /// - Throws: `PostgresError` with `connectionLost` when the connection fails.
    /// The corresponding libpq functions are `PQenterPipelineMode`, `PQsendQueryPrepared` and `PQpipelineSync`.
    func pipeline(transactions: [[(Statement, [String?])]]) throws(PostgresError) -> [Result<
        [PostgresResult], PostgresError
    >] {
        guard let connection else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        guard PQenterPipelineMode(connection) == 1 else { throw lastError() }
        defer { PQexitPipelineMode(connection) }
        // Per group, per command sent: the statement it prepares, or nil for an execution whose result is returned.
        // A statement is prepared right before its first execution, not ahead of `BEGIN`: preparing takes a snapshot,
        // after which `BEGIN ISOLATION LEVEL` is refused. (A statement first prepared in a group that fails is not
        // prepared for the groups after it, which then fail too.)
        var sent: [[String?]] = []
        var preparing: Set<String> = []
        for steps in transactions {
            var commands: [String?] = []
            for (statement, parameters) in steps {
                if !prepared.contains(statement.name) && preparing.insert(statement.name).inserted {
                    guard PQsendPrepare(connection, statement.name, statement.sql, 0, nil) == 1 else {
                        throw lastError()
                    }
                    commands.append(statement.name)
                }
                let queued = withCStrings(parameters) { values in
                    PQsendQueryPrepared(connection, statement.name, Int32(parameters.count), values, nil, nil, 0)
                }
                guard queued == 1 else { throw lastError() }
                commands.append(nil)
            }
            guard PQpipelineSync(connection) == 1 else { throw lastError() }
            sent.append(commands)
        }

        var outcomes: [Result<[PostgresResult], PostgresError>] = []
        for commands in sent {
            var results: [PostgresResult] = []
            var failure: PostgresError?
            for preparing in commands {
                var first: OpaquePointer?
                while let result = PQgetResult(connection) {
                    if first == nil { first = result } else { PQclear(result) }
                }
                guard let result = first else {
                    failure = failure ?? lastError()
                    continue
                }
                let status = PQresultStatus(result)
                if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK {
                    if let name = preparing {
                        prepared.insert(name)
                        PQclear(result)
                    } else {
                        results.append(PostgresResult(result))
                    }
                } else if status == PGRES_PIPELINE_ABORTED {
                    PQclear(result)
                } else {
                    failure = failure ?? resultError(result)
                }
            }
            // The sync point's own result.
            while let result = PQgetResult(connection) {
                let done = PQresultStatus(result) == PGRES_PIPELINE_SYNC
                PQclear(result)
                if done { break }
            }
            if let failure, failure.connectionLost { throw failure }
            outcomes.append(failure.map { .failure($0) } ?? .success(results))
        }
        return outcomes
    }

    /// Runs SQL text that may hold several statements and no parameters (migrations, and `explain`).
    ///
    /// - Throws: `PostgresError`. The corresponding libpq function is `PQexec`.
    @discardableResult
    func unsafeExecute(script sql: String) throws(PostgresError) -> PostgresResult {
        guard let connection else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        return try check(PQexec(connection, sql))
    }

    private func check(_ result: OpaquePointer?) throws(PostgresError) -> PostgresResult {
        guard let result else { throw lastError() }
        let status = PQresultStatus(result)
        if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK { return PostgresResult(result) }
        throw resultError(result)
    }

    private func lastError() -> PostgresError {
        PostgresError(
            sqlState: nil, message: trimmed(String(cString: PQerrorMessage(connection))), connectionLost: !isHealthy)
    }

    /// The error a failed result carries; clears the result.
    private func resultError(_ result: OpaquePointer) -> PostgresError {
        let code = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { SQLState(rawValue: String(cString: $0)) }
        let message =
            PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
            ?? String(cString: PQerrorMessage(connection))
        PQclear(result)
        return PostgresError(sqlState: code, message: trimmed(message), connectionLost: !isHealthy)
    }

    /// Whether a transaction is open (or failed and awaiting ROLLBACK). The corresponding libpq function is
    /// `PQtransactionStatus`.
    var inTransaction: Bool {
        guard let connection else { return false }
        let status = PQtransactionStatus(connection)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }
}

private func trimmed(_ message: String) -> String {
    var text = message
    while text.last == "\n" || text.last == " " { text.removeLast() }
    return text
}

/// Calls `body` with a C array of NUL-terminated copies of `strings` (NULL for nil).
private func withCStrings<R, E: Error>(
    _ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) throws(E) -> R
) throws(E) -> R {
    if strings.isEmpty { return try body(nil) }
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0) } }
    defer { for copy in copies { free(copy) } }
    let pointers = copies.map { $0.map { UnsafePointer($0) } }
    return try pointers.withUnsafeBufferPointer { buffer throws(E) in try body(buffer.baseAddress) }
}
