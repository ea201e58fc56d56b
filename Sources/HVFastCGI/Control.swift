import Domain
import Glibc

/// `hvctl COMMAND`: the administrator's tool, configured exactly like hypervisord (environment, then `.env`).
///
/// Exit status: 0 when everything is fine, 1 when something checked is wrong (or could not be reached), 64 for a usage
/// error, 78 for a bad configuration.
public func hvctl(arguments: [String]) -> Int32 {
    let usage = """
        usage: hvctl COMMAND   (configuration: environment and .env, as for hypervisord)
          check                   configuration, PostgreSQL (and its schema), Redis, and whether hypervisord listens
          migrate                 apply the migrations the database lacks
          status                  the workers and the requests served so far (hypervisord's /metrics)
          fsck [--repair]         every cluster's accounting, scheduling state, look-up starts and Redis snapshot
                                  against its deployments; --repair recomputes wrong accounting, resets wrong
                                  look-up starts, brings the cluster to the policy's state and rebuilds wrong or
                                  missing snapshots
          snapshots rebuild [ID…] rebuild the Redis queue snapshots of the given clusters (all without IDs)
        """
    var words = Array(arguments.dropFirst())
    guard let command = words.first else {
        printError(usage)
        return 64
    }
    words.removeFirst()
    if command == "--help" || command == "-h" || command == "help" {
        print(usage)
        return 0
    }
    guard let configuration = loadConfiguration(for: "hvctl") else { return 78 }
    let control: Control
    do {
        control = try Control(configuration: configuration)
    } catch {
        printError("hvctl: \(error)")
        return 1
    }
    switch (command, words) {
    case ("check", []): return control.check()
    case ("migrate", []): return control.migrate()
    case ("status", []): return control.status()
    case ("fsck", []): return control.fsck(repair: false)
    case ("fsck", ["--repair"]): return control.fsck(repair: true)
    case ("snapshots", let rest) where rest.first == "rebuild":
        let ids = rest.dropFirst().map { Int64($0) }
        guard ids.allSatisfy({ $0 != nil && $0! > 0 }) else {
            printError("hvctl: cluster ids are positive integers")
            return 64
        }
        return control.rebuildSnapshots(ids.compactMap { $0 })
    default:
        printError(usage)
        return 64
    }
}

/// The commands of `hvctl`; each prints one line per finding and returns the exit status.
struct Control {
    let configuration: Configuration
    /// A worker's connections (opened on first use); their log stays quiet, findings are printed.
    private let services: Services
    private let queue: DeploymentQueue
    private let scheduler: ClusterScheduler

    /// - Throws: `CryptoError` when OpenSSL cannot be set up.
    init(configuration: Configuration) throws {
        self.configuration = configuration
        services = try Services(configuration: configuration, log: Log(path: nil, level: .error, role: "hvctl"))
        queue = DeploymentQueue(redis: services.redis, log: services.log)
        scheduler = ClusterScheduler(database: services.database, queue: queue)
    }

    private func connect() -> PostgresConnection? {
        do {
            return try PostgresConnection(url: configuration.databaseURL)
        } catch {
            print("postgresql: cannot connect: \(error.message)")
            return nil
        }
    }

    func check() -> Int32 {
        var healthy = true
        print("configuration: ok (\(configuration.workers) workers, FastCGI at \(configuration.listen.address))")
        if let connection = connect() {
            let version = (try? connection.execute(Migrations.currentVersion).int(0, 0)).flatMap { $0 } ?? 0
            if version == Int64(Migrations.latestVersion) {
                print("postgresql: ok (schema version \(version))")
            } else {
                print(
                    "postgresql: schema version \(version), this build needs \(Migrations.latestVersion): hvctl migrate"
                )
                healthy = false
            }
        } else {
            healthy = false
        }
        if services.redisIsUp() {
            print("redis: ok")
        } else {
            print("redis: not reachable (the service still answers, without snapshots and rate limits)")
            healthy = false
        }
        // Not a failure: hvctl check also runs before hypervisord starts.
        do {
            _ = try FastCGIClient.get("/healthz", from: configuration.listen)
            print("hypervisord: answering at \(configuration.listen.address)")
        } catch {
            print("hypervisord: not answering at \(configuration.listen.address) (\(error))")
        }
        return healthy ? 0 : 1
    }

    func migrate() -> Int32 {
        guard let connection = connect() else { return 1 }
        do {
            let applied = try Migrations.migrate(connection)
            print(
                applied.isEmpty
                    ? "schema already at version \(Migrations.latestVersion)"
                    : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
            return 0
        } catch {
            print("migration failed: \(error.message)")
            return 1
        }
    }

    func status() -> Int32 {
        let text: String
        do {
            text = try FastCGIClient.get(MetricsHandler.pattern, from: configuration.listen)
        } catch {
            print("hypervisord: not answering at \(configuration.listen.address): \(error)")
            return 1
        }
        let samples = PrometheusText.samples(text)
        let now = samples.filter { $0.name == "hv_worker_busy_seconds" }
        let busy = Int(samples.value("hv_workers", ["state": "busy"]))
        print("workers: \(busy + Int(samples.value("hv_workers", ["state": "idle"]))) (\(busy) busy)")
        print(pad("pid", 10) + pad("served", 10) + pad("state", 8) + pad("for", 10) + "route")
        for worker in samples.filter({ $0.name == "hv_worker_requests" }) {
            let pid = worker.labels["pid"] ?? "?"
            let busy = now.first { $0.labels["pid"] == pid }
            let age = busy.map { String(Int(($0.value * 1000).rounded())) + " ms" } ?? "-"
            print(
                pad(pid, 10) + pad(String(Int(worker.value)), 10) + pad(busy == nil ? "idle" : "busy", 8) + pad(age, 10)
                    + (busy?.labels["route"] ?? ""))
        }
        print("")
        print(pad("route", 34) + pad("requests", 10) + pad("2xx", 9) + pad("4xx", 9) + pad("5xx", 9) + "mean ms")
        let routes = samples.filter { $0.name == "hv_request_duration_seconds_count" }
        for route in routes where route.value > 0 {
            let name = route.labels["route"] ?? "?"
            let total = samples.value("hv_request_duration_seconds_sum", ["route": name])
            let byCode = { (code: String) in
                String(Int(samples.value("hv_requests_total", ["route": name, "code": code])))
            }
            print(
                pad(name, 34) + pad(String(Int(route.value)), 10) + pad(byCode("2xx"), 9) + pad(byCode("4xx"), 9)
                    + pad(byCode("5xx"), 9) + threeDecimals(total / route.value * 1000))
        }
        return 0
    }

    /// Runs `statement` (whose only parameter is the cluster) in a transaction under the cluster's lock.
    private func repairUnderLock(_ statement: Statement, cluster id: Int64, _ connection: PostgresConnection) throws {
        _ = try connection.pipeline([
            (ControlStatements.begin, []), (ControlStatements.lock, [String(id)]), (statement, [String(id)]),
            (ControlStatements.commit, []),
        ])
    }

    func fsck(repair: Bool) -> Int32 {
        guard let connection = connect() else { return 1 }
        var problems = 0
        var absent = 0  // not a fault: snapshots are rebuilt from PostgreSQL on demand
        var unrepaired = 0
        do {
            let ids = try clusterIDs(connection)
            for id in ids {
                // Each read is one statement, so one consistent state of the cluster even while it changes.
                guard var record = try ClusterRecord.read(id, connection) else { continue }  // deleted meanwhile
                var repaired = false
                var snapshotWrong = false
                if record.available != record.capacity - record.running {
                    problems += 1
                    print(
                        "cluster \(id): available \(describe(record.available)) but total − running is"
                            + " \(describe(record.capacity - record.running))")
                    if repair {
                        try repairUnderLock(ControlStatements.recomputeAvailable, cluster: id, connection)
                        print("cluster \(id): available recomputed")
                        repaired = true
                        snapshotWrong = true
                    }
                }
                let missed = record.missedByLookUps
                if !missed.isEmpty {
                    problems += 1
                    print("cluster \(id): the scheduler's look-ups start past deployments \(missed)")
                    if repair {
                        try repairUnderLock(ControlStatements.resetLookUpStarts, cluster: id, connection)
                        print("cluster \(id): look-up starts reset")
                        repaired = true
                    }
                }
                let plan = Scheduler.plan(for: record.snapshot)
                if !plan.start.isEmpty || !plan.preempt.isEmpty {
                    problems += 1
                    print(
                        "cluster \(id): not the policy's state: it would start \(plan.start), preempt \(plan.preempt)")
                    if repair {
                        let settled = try scheduler.settle(id)
                        print("cluster \(id): settled: started \(settled.start), preempted \(settled.preempt)")
                        repaired = true
                    }
                }
                if repaired, let fresh = try ClusterRecord.read(id, connection) { record = fresh }
                var check = snapshotWrong ? .matches : try checkSnapshot(id, record)
                if case .behind = check {
                    // Workers publish just after their commit: give a change in flight a moment to arrive.
                    sleep(1)
                    if let fresh = try ClusterRecord.read(id, connection) {
                        record = fresh
                        check = try checkSnapshot(id, record)
                    }
                }
                switch check {
                case .matches: break
                case .absent:
                    absent += 1
                    snapshotWrong = repair
                case .behind(let finding), .wrong(let finding):
                    problems += 1
                    print("cluster \(id): Redis snapshot \(finding)")
                    snapshotWrong = true
                }
                if repair && snapshotWrong {
                    do {
                        try queue.rebuild(id, from: services.database, evenAtSameVersion: true)
                        print("cluster \(id): Redis snapshot rebuilt")
                    } catch {
                        unrepaired += 1
                        print("cluster \(id): Redis snapshot not rebuilt: \(error)")
                    }
                }
            }
            if absent > 0 && !repair {
                print(
                    "clusters without a Redis snapshot yet (Redis restarted empty): \(absent); each is built at its"
                        + " next change or read, `hvctl snapshots rebuild` builds them now")
            }
            print("\(ids.count) clusters checked, \(problems) problems" + (repair ? ", \(unrepaired) left" : ""))
        } catch {
            print("fsck stopped: \(error)")
            return 1
        }
        return (repair ? unrepaired : problems) == 0 ? 0 : 1
    }

    private func clusterIDs(_ connection: PostgresConnection) throws -> [Int64] {
        let all = try connection.execute(ControlStatements.clusterIDs)
        return (0..<all.rowCount).compactMap { all.int($0, 0) }
    }

    private enum SnapshotCheck {
        case matches, absent
        case behind(String), wrong(String)
    }

    /// How the snapshot of `cluster` in Redis compares with `record`.
    private func checkSnapshot(_ cluster: Int64, _ record: ClusterRecord) throws -> SnapshotCheck {
        let version = record.version
        let redis = services.redis
        let keys = DeploymentQueue.keys(cluster)
        let stored: RedisReply
        do {
            stored = try redis.command(["HGET", keys[2], "version"])
        } catch {
            return .wrong("not readable (\(error))")
        }
        guard case .string(let text) = stored, let snapshotVersion = Int64(text) else {
            return version == 0 ? .matches : .absent  // a cluster gets its snapshot with its first change
        }
        if snapshotVersion < version { return .behind("at version \(snapshotVersion), PostgreSQL at \(version)") }
        guard snapshotVersion == version else {
            return .wrong("at version \(snapshotVersion), PostgreSQL at \(version)")
        }
        for (key, running) in [(keys[0], true), (keys[1], false)] {
            let expected = record.active.filter { $0.isRunning == running }.map(DeploymentQueue.member).sorted()
            guard case .array(let members) = try redis.command(["ZRANGE", key, "0", "-1"]) else {
                return .wrong("unreadable")
            }
            let actual = members.compactMap { if case .string(let member) = $0 { member } else { nil } }
            if actual != expected {
                let kind = running ? "running" : "pending"
                return .wrong(
                    actual.count == expected.count
                        ? "lists other \(kind) deployments than PostgreSQL"
                        : "lists \(actual.count) \(kind), PostgreSQL \(expected.count)")
            }
        }
        return .matches
    }

    func rebuildSnapshots(_ ids: [Int64]) -> Int32 {
        guard let connection = connect() else { return 1 }
        do {
            let existing = try clusterIDs(connection)
            var status: Int32 = 0
            for id in ids.isEmpty ? existing : ids {
                guard existing.contains(id) else {
                    print("cluster \(id): no such cluster")
                    status = 1
                    continue
                }
                try queue.rebuild(id, from: services.database, evenAtSameVersion: true)
                print("cluster \(id): snapshot rebuilt")
            }
            return status
        } catch {
            print("rebuild stopped: \(error)")
            return 1
        }
    }
}

enum ControlStatements {
    static let begin = Statement(name: "hvctl_begin", sql: "BEGIN")
    static let commit = Statement(name: "hvctl_commit", sql: "COMMIT")
    static let lock = Statement(name: "hvctl_lock", sql: "SELECT pg_advisory_xact_lock($1)")
    static let clusterIDs = Statement(name: "hvctl_clusters", sql: "SELECT id FROM clusters ORDER BY id")
    /// Under the cluster's lock: `available_*` from its running deployments, and a new version for the snapshot.
    static let recomputeAvailable = Statement(
        name: "hvctl_recompute_available",
        sql: """
            UPDATE clusters c
            SET available_ram = c.total_ram - r.ram, available_cpu = c.total_cpu - r.cpu,
                available_gpu = c.total_gpu - r.gpu, version = c.version + 1
            FROM (SELECT coalesce(sum(ram_required), 0) AS ram, coalesce(sum(cpu_required), 0) AS cpu,
                         coalesce(sum(gpu_required), 0) AS gpu
                  FROM deployments WHERE cluster_id = $1 AND status = 'Running') r
            WHERE c.id = $1
            """)
    /// Under the cluster's lock: its look-ups start from the defaults again, which take in every deployment.
    static let resetLookUpStarts = Statement(
        name: "hvctl_reset_look_up_starts",
        sql: """
            UPDATE clusters SET running_from_priority = DEFAULT, running_from_seq = DEFAULT,
                                pending_from_priority = DEFAULT, pending_from_seq = DEFAULT
            WHERE id = $1
            """)
}

private func describe(_ amounts: Resources) -> String {
    "ram \(amounts.ram), cpu \(amounts.cpu)m, gpu \(amounts.gpu)"
}

private func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}
