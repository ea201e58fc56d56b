import Glibc
import CPostgres

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
    static let foreignKeyViolation = SQLState(rawValue: "23503")
    static let checkViolation = SQLState(rawValue: "23514")
    static let serializationFailure = SQLState(rawValue: "40001")
    static let deadlockDetected = SQLState(rawValue: "40P01")
    static let undefinedTable = SQLState(rawValue: "42P01")
}

/// A named SQL statement, prepared once per connection on first use. Values are always bound as `$1, $2, …`.
struct Statement: Hashable, Sendable {
    let name: String
    let sql: String
}

/// The rows of one statement, in text format. The corresponding libpq function is `PQclear`.
final class PostgresResult {
    private let result: OpaquePointer

    init(_ result: OpaquePointer) { self.result = result }
    deinit { PQclear(result) }

    var rowCount: Int { Int(PQntuples(result)) }
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
}

/// One libpq connection, owned by one worker process and used by one request at a time.
final class PostgresConnection {
    private var connection: OpaquePointer?
    private var prepared: Set<String> = []

    /// Connects to `url`.
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
    }

    deinit { PQfinish(connection) }

    var isHealthy: Bool { connection.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// Runs a prepared statement with text parameters (nil is SQL NULL).
    ///
    /// - Throws: `PostgresError`. The corresponding libpq functions are `PQprepare` and `PQexecPrepared`.
    @discardableResult
    func execute(_ statement: Statement, _ parameters: [String?] = []) throws(PostgresError) -> PostgresResult {
        guard let connection else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        if !prepared.contains(statement.name) {
            let result = PQprepare(connection, statement.name, statement.sql, 0, nil)
            _ = try check(result)
            prepared.insert(statement.name)
        }
        return try withCStrings(parameters) { values throws(PostgresError) in
            try check(PQexecPrepared(connection, statement.name, Int32(parameters.count), values, nil, nil, 0))
        }
    }

    /// Runs SQL text that may hold several statements and no parameters (migrations only).
    ///
    /// - Throws: `PostgresError`. The corresponding libpq function is `PQexec`.
    @discardableResult
    func unsafeExecute(script sql: String) throws(PostgresError) -> PostgresResult {
        guard let connection else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        return try check(PQexec(connection, sql))
    }

    private func check(_ result: OpaquePointer?) throws(PostgresError) -> PostgresResult {
        guard let result else {
            throw PostgresError(
                sqlState: nil, message: trimmed(String(cString: PQerrorMessage(connection))), connectionLost: !isHealthy)
        }
        let status = PQresultStatus(result)
        if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK { return PostgresResult(result) }
        let code = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { SQLState(rawValue: String(cString: $0)) }
        let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
            ?? String(cString: PQerrorMessage(connection))
        PQclear(result)
        throw PostgresError(sqlState: code, message: trimmed(message), connectionLost: !isHealthy)
    }
}

private func trimmed(_ message: String) -> String {
    var text = message
    while text.last == "\n" || text.last == " " { text.removeLast() }
    return text
}

/// Calls `body` with a C array of NUL-terminated copies of `strings` (NULL for nil).
private func withCStrings<R>(
    _ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) throws(PostgresError) -> R
) throws(PostgresError) -> R {
    if strings.isEmpty { return try body(nil) }
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0) } }
    defer { for copy in copies { free(copy) } }
    let pointers = copies.map { $0.map { UnsafePointer($0) } }
    return try pointers.withUnsafeBufferPointer { buffer throws(PostgresError) in try body(buffer.baseAddress) }
}
