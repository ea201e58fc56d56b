import Foundation
import Testing

@testable import HVFastCGI

/// `hvctl` against a running stack: it is configured like hypervisord and talks to the same PostgreSQL, Redis and
/// FastCGI socket.
@Suite(.serialized)
struct ControlTests {
    private static let started = Stack.started()

    private let stack: Stack
    private let api: APIClient

    init() throws {
        stack = try Self.started.get()
        api = APIClient(stack.client)
    }

    @Test func checkMigrateAndStatusDescribeTheRunningService() throws {
        try hvctl(
            "check", exits: 0,
            printing: [
                "postgresql: ok (schema version \(Migrations.latestVersion))", "redis: ok", "hypervisord: answering",
            ])
        #expect(try hvctl("migrate", exits: 0) == "schema already at version \(Migrations.latestVersion)\n")

        for _ in 0..<3 { _ = try stack.client.get("/healthz") }
        let status = try hvctl("status", exits: 0)
        let lines = status.split(separator: "\n")
        #expect(lines.first?.hasPrefix("workers: ") == true, "\(status)")
        let health = try #require(lines.first { $0.hasPrefix("GET /healthz ") }, "\(status)")
        let columns = health.split(separator: " ")
        #expect(Int(columns[2]) ?? 0 >= 3 && columns[2] == columns[3], "requests and 2xx: \(health)")
        // Its own /metrics request keeps one worker busy.
        #expect(lines.contains { $0.contains(" busy ") && $0.hasSuffix(" GET /metrics") }, "\(status)")
    }

    @Test func checkReportsAnUnreachableRedisAndExits1() throws {
        try stack.stopRedis()
        defer { try? stack.startRedis() }
        try hvctl("check", exits: 1, printing: ["redis: not reachable", "postgresql: ok"])
        try stack.startRedis()
        try hvctl("check", exits: 0)
        // Redis came back empty: put back the snapshots of clusters other tests made, whatever the order they ran in.
        try hvctl("snapshots", "rebuild", exits: 0)
        try hvctl("fsck", exits: 0)
    }

    @Test func usageErrorsExit64AndAnUnknownClusterExits1() throws {
        try hvctl(exits: 64)
        try hvctl("frobnicate", exits: 64)
        try hvctl("fsck", "--force", exits: 64)
        try hvctl("snapshots", "rebuild", "seven", exits: 64, printing: ["cluster ids are positive integers"])
        #expect(try hvctl("snapshots", "rebuild", "987654321", exits: 1) == "cluster 987654321: no such cluster\n")
    }

    @Test func fsckFindsBrokenAccountingAndSnapshotsAndRepairRestoresThem() throws {
        let (cluster, database) = try clusterWithDeployments()
        let clean = try hvctl("fsck", exits: 0, printing: [", 0 problems"])
        #expect(clean.hasSuffix(" problems\n"), "\(clean)")

        try database.query("UPDATE clusters SET available_ram = available_ram + 1 WHERE id = $1", [String(cluster)])
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        _ = try redis.command(["DEL", DeploymentQueue.keys(cluster)[0]])
        try hvctl("fsck", exits: 1, printing: ["cluster \(cluster): available"])

        try hvctl(
            "fsck", "--repair", exits: 0,
            printing: ["cluster \(cluster): available recomputed", "cluster \(cluster): Redis snapshot rebuilt"])
        try hvctl("fsck", exits: 0)
        let available = try database.query("SELECT available_ram FROM clusters WHERE id = $1", [String(cluster)])
        #expect(available.int(0, 0) == Int64(10 - 4 - 3))

        // Look-ups that would start past a running deployment: found, and reset to take in everything.
        try database.query("UPDATE clusters SET running_from_priority = 2147483647 WHERE id = $1", [String(cluster)])
        try hvctl(
            "fsck", exits: 1, printing: ["cluster \(cluster): the scheduler's look-ups start past deployments ["])
        try hvctl("fsck", "--repair", exits: 0, printing: ["cluster \(cluster): look-up starts reset"])
        try hvctl("fsck", exits: 0)

        // A missing snapshot alone: found, and `snapshots rebuild` puts it back.
        _ = try redis.command(["DEL", DeploymentQueue.keys(cluster)[1]])
        try hvctl("fsck", exits: 1, printing: ["cluster \(cluster): Redis snapshot lists 0 pending, PostgreSQL 1"])
        try hvctl("snapshots", "rebuild", String(cluster), exits: 0)
        try hvctl("fsck", exits: 0)

        // No snapshot at all (Redis restarted empty) is a state the service rebuilds on demand, not a fault.
        _ = try redis.command(["DEL"] + DeploymentQueue.keys(cluster))
        try hvctl("fsck", exits: 0, printing: ["clusters without a Redis snapshot yet (Redis restarted empty): "])
        try hvctl("fsck", "--repair", exits: 0, printing: ["cluster \(cluster): Redis snapshot rebuilt"])
        let version = try redis.command(["HGET", DeploymentQueue.keys(cluster)[2], "version"])
        #expect(version != .null, "\(version)")
    }

    @Test func fsckFindsAStateThatIsNotThePolicysAndRepairSettlesIt() throws {
        let (cluster, database) = try clusterWithDeployments()
        // The 3 GiB deployment marked Pending by hand, its resources handed back: the policy would start it again.
        let moved = try database.query(
            """
            UPDATE deployments SET status = 'Pending' WHERE cluster_id = $1 AND ram_required = 3 AND status = 'Running'
            RETURNING id
            """, [String(cluster)])
        let id = try #require(moved.int(0, 0))
        try database.query(
            "UPDATE clusters SET available_ram = available_ram + 3, available_cpu = available_cpu + 3000 WHERE id = $1",
            [String(cluster)])
        try hvctl(
            "fsck", exits: 1,
            printing: ["cluster \(cluster): not the policy's state: it would start [\(id)], preempt []"])
        try hvctl(
            "fsck", "--repair", exits: 0, printing: ["cluster \(cluster): settled: started [\(id)], preempted []"])
        try hvctl("fsck", exits: 0)
        let row = try database.query(
            """
            SELECT d.status::text, c.available_ram, (SELECT count(*) FROM deployment_events e
                                                      WHERE e.deployment_id = d.id AND e.kind = 'Started')
            FROM deployments d JOIN clusters c ON c.id = d.cluster_id WHERE d.id = $1
            """, [String(id)])
        #expect(row.string(0, 0) == "Running")
        #expect(row.int(0, 1) == Int64(3))
        #expect(row.int(0, 2) == Int64(2), "started when created, and again when settled")
    }

    /// Runs `hvctl`, expects its exit status and each of `lines` in what it printed, and returns what it printed.
    @discardableResult
    private func hvctl(
        _ arguments: String..., exits status: Int32, printing lines: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> String {
        let run = try stack.hvctl(arguments)
        #expect(run.status == status, "\(run.output)", sourceLocation: sourceLocation)
        for line in lines {
            #expect(run.output.contains(line), "\(run.output)", sourceLocation: sourceLocation)
        }
        return run.output
    }

    /// A 10 GiB / 10 CPU / 1 GPU cluster with deployments of 4 and 3 GiB running and one of 8 GiB waiting, and a
    /// PostgreSQL session for the test.
    private func clusterWithDeployments() throws -> (Int64, TestDatabase) {
        let user = try api.newUser("hvctl")
        let created = try api.createCluster(APIClient.unique("fsck"), ram: 10, cpu: 10, gpu: 1, as: user)
        let cluster = try #require((created.jsonObject?["id"] as? NSNumber)?.int64Value, "\(created.text)")
        for (name, ram) in [("four", 4), ("three", 3), ("eight", 8)] {
            let response = try stack.client.post(
                "/deployments/create/",
                json: [
                    "name": APIClient.unique(name), "cluster_id": cluster, "image_path": "registry.example.com/a/b:1",
                    "ram_required": ram, "cpu_required": ram, "gpu_required": 0, "priority": 1,
                ], headers: user.auth)
            #expect(response.status == 200, "\(response.text)")
        }
        return (cluster, try TestDatabase(stack.databaseURL))
    }
}
