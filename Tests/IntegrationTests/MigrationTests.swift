import Foundation
import Testing

@testable import HVFastCGI

/// Masters starting together on one fresh database: the advisory lock makes them take turns, every migration is
/// applied exactly once, and each master succeeds.
@Suite(.serialized) struct MigrationTests {
    @Test func concurrentMigrationsOnAFreshDatabaseAllSucceedAndApplyEachVersionOnce() throws {
        let stack = try Stack()
        defer { stack.stop() }
        try stack.start()
        let admin = try PostgresConnection(url: superuserURL(stack.databaseURL, database: "hypervisor"))
        let name = "fresh_\(getpid())_\(Int(Date().timeIntervalSince1970))"
        try admin.unsafeExecute(script: "CREATE DATABASE \(name)")
        let url = superuserURL(stack.databaseURL, database: name)

        let results = ResultsBox()
        let group = DispatchGroup()
        for _ in 0..<4 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let connection = try PostgresConnection(url: url)
                    results.append(.success(try Migrations.migrate(connection)))
                } catch {
                    results.append(.failure(error))
                }
            }
        }
        #expect(group.wait(timeout: .now() + 60) == .success)

        let outcomes = results.values
        #expect(outcomes.count == 4)
        let applied = outcomes.compactMap { try? $0.get() }
        #expect(applied.count == 4, "every master's migration step succeeds")
        #expect(applied.flatMap { $0 }.sorted() == Migrations.all.map(\.version), "each version applied once")
        #expect(applied.filter(\.isEmpty).count == 3, "the later ones find nothing to do")

        let check = try PostgresConnection(url: url)
        let rows = try check.execute(
            Statement(name: "count_versions", sql: "SELECT count(*), max(version) FROM schema_migrations"))
        #expect(rows.int(0, 0) == Int64(Migrations.all.count))
        #expect(rows.int(0, 1) == Int64(Migrations.latestVersion))
        // Running again is a no-op.
        #expect(try Migrations.migrate(check) == [])
    }
}

/// The stack's libpq URL for `database` as the `postgres` superuser (trusted on the private socket).
private func superuserURL(_ url: String, database: String) -> String {
    var result = url.replacingOccurrences(of: "user=hypervisor", with: "user=postgres")
    if let range = result.range(of: "/hypervisor?") { result.replaceSubrange(range, with: "/\(database)?") }
    return result
}

private final class ResultsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Result<[Int], any Error>] = []
    func append(_ result: Result<[Int], any Error>) { lock.withLock { stored.append(result) } }
    var values: [Result<[Int], any Error>] { lock.withLock { stored } }
}
