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
        let check = try stack.hvctl("check")
        #expect(check.status == 0, "\(check.output)")
        for line in [
            "postgresql: ok (schema version \(Migrations.latestVersion))", "redis: ok", "hypervisord: answering",
        ] {
            #expect(check.output.contains(line), "\(check.output)")
        }
        let migrate = try stack.hvctl("migrate")
        #expect(migrate.status == 0)
        #expect(migrate.output == "schema already at version \(Migrations.latestVersion)\n")

        for _ in 0..<3 { _ = try stack.client.get("/healthz") }
        let status = try stack.hvctl("status")
        #expect(status.status == 0, "\(status.output)")
        let lines = status.output.split(separator: "\n")
        #expect(lines.first?.hasPrefix("workers: ") == true, "\(status.output)")
        let health = try #require(lines.first { $0.hasPrefix("GET /healthz ") }, "\(status.output)")
        let columns = health.split(separator: " ")
        #expect(Int(columns[2]) ?? 0 >= 3 && columns[2] == columns[3], "requests and 2xx: \(health)")
        // Its own /metrics request keeps one worker busy.
        #expect(lines.contains { $0.contains(" busy ") && $0.hasSuffix(" GET /metrics") }, "\(status.output)")
    }

    @Test func checkReportsAnUnreachableRedisAndExits1() throws {
        try stack.stopRedis()
        defer { try? stack.startRedis() }
        let check = try stack.hvctl("check")
        #expect(check.status == 1, "\(check.output)")
        #expect(check.output.contains("redis: not reachable"), "\(check.output)")
        #expect(check.output.contains("postgresql: ok"), "\(check.output)")
        try stack.startRedis()
        #expect(try stack.hvctl("check").status == 0)
        // Redis came back empty: put back the snapshots of clusters other tests made, whatever the order they ran in.
        #expect(try stack.hvctl("snapshots", "rebuild").status == 0)
        #expect(try stack.hvctl("fsck").status == 0)
    }

    @Test func usageErrorsExit64AndAnUnknownClusterExits1() throws {
        #expect(try stack.hvctl().status == 64)
        #expect(try stack.hvctl("frobnicate").status == 64)
        #expect(try stack.hvctl("fsck", "--force").status == 64)
        let badID = try stack.hvctl("snapshots", "rebuild", "seven")
        #expect(badID.status == 64)
        #expect(badID.output.contains("cluster ids are positive integers"))
        let unknown = try stack.hvctl("snapshots", "rebuild", "987654321")
        #expect(unknown.status == 1)
        #expect(unknown.output == "cluster 987654321: no such cluster\n")
    }

    @Test func fsckFindsBrokenAccountingAndSnapshotsAndRepairRestoresThem() throws {
        let (cluster, database) = try clusterWithDeployments()
        let clean = try stack.hvctl("fsck")
        #expect(clean.status == 0, "\(clean.output)")
        #expect(clean.output.hasSuffix(" problems\n") && clean.output.contains(", 0 problems"), "\(clean.output)")

        try database.query("UPDATE clusters SET available_ram = available_ram + 1 WHERE id = $1", [String(cluster)])
        let redis = RedisConnection(endpoint: .unix(path: stack.redisHost), database: 0)
        _ = try redis.command(["DEL", DeploymentQueue.keys(cluster)[0]])
        let broken = try stack.hvctl("fsck")
        #expect(broken.status == 1, "\(broken.output)")
        #expect(broken.output.contains("cluster \(cluster): available"), "\(broken.output)")

        let repaired = try stack.hvctl("fsck", "--repair")
        #expect(repaired.status == 0, "\(repaired.output)")
        #expect(repaired.output.contains("cluster \(cluster): available recomputed"), "\(repaired.output)")
        #expect(repaired.output.contains("cluster \(cluster): Redis snapshot rebuilt"), "\(repaired.output)")
        let after = try stack.hvctl("fsck")
        #expect(after.status == 0, "\(after.output)")
        let available = try database.query("SELECT available_ram FROM clusters WHERE id = $1", [String(cluster)])
        #expect(available.int(0, 0) == Int64(10 - 4 - 3))

        // A missing snapshot alone: found, and `snapshots rebuild` puts it back.
        _ = try redis.command(["DEL", DeploymentQueue.keys(cluster)[1]])
        let missing = try stack.hvctl("fsck")
        #expect(missing.status == 1)
        #expect(
            missing.output.contains("cluster \(cluster): Redis snapshot lists 0 pending, PostgreSQL 1"),
            "\(missing.output)")
        let rebuilt = try stack.hvctl("snapshots", "rebuild", String(cluster))
        #expect(rebuilt.status == 0, "\(rebuilt.output)")
        #expect(try stack.hvctl("fsck").status == 0)

        // No snapshot at all (Redis restarted empty) is a state the service rebuilds on demand, not a fault.
        _ = try redis.command(["DEL"] + DeploymentQueue.keys(cluster))
        let absent = try stack.hvctl("fsck")
        #expect(absent.status == 0, "\(absent.output)")
        #expect(
            absent.output.contains("clusters without a Redis snapshot yet (Redis restarted empty): "),
            "\(absent.output)")
        let built = try stack.hvctl("fsck", "--repair")
        #expect(built.output.contains("cluster \(cluster): Redis snapshot rebuilt"), "\(built.output)")
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
        let found = try stack.hvctl("fsck")
        #expect(found.status == 1, "\(found.output)")
        #expect(
            found.output.contains("cluster \(cluster): not the policy's state: it would start [\(id)], preempt []"),
            "\(found.output)")

        let repaired = try stack.hvctl("fsck", "--repair")
        #expect(repaired.status == 0, "\(repaired.output)")
        #expect(
            repaired.output.contains("cluster \(cluster): settled: started [\(id)], preempted []"), "\(repaired.output)"
        )
        let after = try stack.hvctl("fsck")
        #expect(after.status == 0, "\(after.output)")
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
