@testable import HVFastCGI

/// A test's own PostgreSQL session: SQL text with `$n` parameters, each prepared once.
final class TestDatabase {
    private let connection: PostgresConnection
    private var statements: [String: Statement] = [:]

    init(_ url: String) throws {
        connection = try PostgresConnection(url: url)
    }

    @discardableResult
    func query(_ sql: String, _ parameters: [String?] = []) throws -> PostgresResult {
        let statement = statements[sql] ?? Statement(name: "test_\(statements.count)", sql: sql)
        statements[sql] = statement
        return try connection.execute(statement, parameters)
    }
}

extension Stack {
    /// A scheduler of this test process, over this stack's Redis and the database at `url` (the stack's own by default).
    func scheduler(database url: String? = nil) -> ClusterScheduler {
        let log = Log(path: nil, level: .error, role: "test")
        let redis = RedisConnection(endpoint: .unix(path: redisHost), database: 0)
        return ClusterScheduler(
            database: Database(url: url ?? databaseURL, log: log), queue: DeploymentQueue(redis: redis, log: log))
    }
}
